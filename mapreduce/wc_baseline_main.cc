// mr-wc-baseline: the yardstick of scripts/mr-bench.sh, not part of the
// framework. A plain single-threaded word count over the given files: each
// file mapped, words = maximal runs of ASCII letters (as the wc app), counted
// in one hash map. Prints the distinct words, the total, the bytes read and
// the time taken; with --output=FILE also "word count" lines.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "mapreduce/app.h"
#include "mapreduce/shuffle.h"

int main(int argc, char** argv) {
  std::string output;
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--output=", 0) == 0) {
      output = a.substr(9);
    } else {
      inputs.push_back(a);
    }
  }
  if (inputs.empty()) {
    std::cerr << "usage: mr-wc-baseline [--output=FILE] FILE...\n";
    return 2;
  }
  const auto start = std::chrono::steady_clock::now();
  // Keys point into the mappings, which stay open to the end.
  std::vector<std::unique_ptr<ds::mr::MappedFile>> files;
  absl::flat_hash_map<std::string_view, int64_t> counts;
  uint64_t bytes = 0, words = 0;
  for (const std::string& path : inputs) {
    auto f = ds::mr::MappedFile::Open(path);
    if (!f.ok()) {
      std::cerr << "mr-wc-baseline: " << f.status().message() << "\n";
      return 1;
    }
    bytes += (*f)->data().size();
    ds::mr::ForEachWord((*f)->data(), [&](std::string_view w) {
      ++counts[w];
      ++words;
    });
    files.push_back(std::move(*f));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!output.empty()) {
    FILE* out = fopen(output.c_str(), "w");
    if (out == nullptr) {
      perror(output.c_str());
      return 1;
    }
    for (const auto& [w, n] : counts) {
      fprintf(out, "%.*s %lld\n", static_cast<int>(w.size()), w.data(), static_cast<long long>(n));
    }
    fclose(out);
  }
  printf("%zu distinct words, %llu words, %.1f MiB in %.2f s = %.1f MiB/s\n", counts.size(),
         static_cast<unsigned long long>(words), bytes / 1048576.0, seconds,
         bytes / 1048576.0 / seconds);
  return 0;
}
