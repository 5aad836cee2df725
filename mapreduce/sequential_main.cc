// mr-sequential: the reference MapReduce, in one process: map every input in
// order, sort all pairs by key, reduce each key, write one output file. Tests
// compare the distributed output with it.
#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "common/init.h"
#include "mapreduce/records.h"
#include "mapreduce/runner.h"

ABSL_FLAG(std::string, app, "", "Bundled app name or plugin path (.so).");
ABSL_FLAG(std::string, mapper, "", "Streaming mode: map command.");
ABSL_FLAG(std::string, reducer, "", "Streaming mode: reduce command.");
ABSL_FLAG(std::string, output, "mr-out-0", "Output file.");
ABSL_FLAG(std::string, app_dir, "",
          "Directory of bundled apps; default ../lib next to the binary.");
ABSL_FLAG(std::string, temp_dir, "/tmp", "Directory for sort spills and streaming files.");
ABSL_FLAG(int64_t, sort_memory_mb, 1024, "Sort memory budget in MiB before spilling.");

int main(int argc, char** argv) {
  std::vector<std::string> inputs = ds::common::InitProcess(
      argc, argv, "mr-sequential --app=NAME|PATH.so FILE...: sequential reference MapReduce.");
  if (inputs.empty()) {
    std::cerr << "mr-sequential: no input files\n";
    return 2;
  }
  // No combiner: the reference runs each key's values through Reduce only.
  ds::mr::RunnerSpec spec{.app = absl::GetFlag(FLAGS_app),
                          .mapper = absl::GetFlag(FLAGS_mapper),
                          .reducer = absl::GetFlag(FLAGS_reducer),
                          .app_dir = absl::GetFlag(FLAGS_app_dir),
                          .temp_dir = absl::GetFlag(FLAGS_temp_dir)};
  auto runner = ds::mr::MakeRunner(spec);
  if (!runner.ok()) {
    std::cerr << "mr-sequential: " << runner.status().message() << "\n";
    return 1;
  }
  ds::mr::ExternalSorter sorter(spec.temp_dir,
                                static_cast<uint64_t>(absl::GetFlag(FLAGS_sort_memory_mb)) << 20);
  ds::mr::Counters counters;
  absl::Status st, sort_error;
  for (const std::string& input : inputs) {
    uint64_t bytes = 0;
    st = (*runner)->Map(
        ds::mr::MapInput{input},
        [&](std::string_view k, std::string_view v) {
          if (auto added = sorter.Add(k, v); !added.ok() && sort_error.ok()) sort_error = added;
        },
        &counters, &bytes);
    if (st.ok()) st = sort_error;
    if (!st.ok()) break;
  }
  std::string out;
  if (st.ok()) {
    st = (*runner)->Reduce(
        [&](const ds::mr::EmitFn& fn) {
          return sorter.ForEach([&](std::string_view k, std::string_view v) {
            fn(k, v);
            return absl::OkStatus();
          });
        },
        [&](std::string_view k, std::string_view v) {
          out.append(k);
          out.push_back(' ');
          out.append(v);
          out.push_back('\n');
        },
        &counters);
  }
  if (st.ok()) st = ds::mr::WriteFileAtomically(absl::GetFlag(FLAGS_output), out);
  if (!st.ok()) {
    std::cerr << "mr-sequential: " << st.message() << "\n";
    return 1;
  }
  return 0;
}
