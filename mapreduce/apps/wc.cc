// Word count: words are maximal runs of ASCII letters; output "word count".
// The combiner sums the counts of one map task, so a map writes each distinct
// word once instead of once per occurrence.
#include <charconv>
#include <cstdint>
#include <string>

#include "mapreduce/app.h"

namespace {

int64_t Sum(const std::vector<std::string_view>& values) {
  int64_t n = 0;
  for (std::string_view v : values) {
    int64_t x = 0;
    std::from_chars(v.data(), v.data() + v.size(), x);
    n += x;
  }
  return n;
}

}  // namespace

class WordCount : public ds::mr::App {
 public:
  void Map(std::string_view, std::string_view contents, ds::mr::Emitter& out) override {
    ds::mr::ForEachWord(contents, [&](std::string_view word) { out.Emit(word, "1"); });
  }
  std::string Reduce(std::string_view, std::vector<std::string_view>& values,
                     ds::mr::Emitter&) override {
    return std::to_string(Sum(values));
  }
  std::string Combine(std::string_view, std::vector<std::string_view>& values,
                      ds::mr::Emitter&) override {
    return std::to_string(Sum(values));
  }
};

DS_MR_APP(WordCount, "wc")
