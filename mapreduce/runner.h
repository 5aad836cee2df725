// How the worker and mr-sequential run user code: a plugin loaded with dlopen
// through the C ABI (mapreduce/abi.h), or streaming executables (any program
// reading lines on stdin and writing "key<TAB>value" lines, as in Hadoop
// streaming). Both behind one interface.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "mapreduce/abi.h"

namespace ds::mr {

using Counters = std::map<std::string, int64_t>;
using EmitFn = std::function<void(std::string_view key, std::string_view value)>;
// Yields the sorted intermediate records of a reduce partition, one at a time.
using ForEachRecordFn = std::function<absl::Status(const EmitFn& fn)>;

// A per-key combiner (plugins): folds `values` (two or more) into the values
// it passes to `emit` (usually one).
using CombineKeyFn =
    std::function<absl::Status(std::string_view key, std::vector<std::string_view>& values,
                               const std::function<void(std::string_view value)>& emit)>;

// A whole-batch combiner (streaming): reads key<TAB>value lines sorted by key
// from `in_path`, writes key<TAB>value lines to `out_path`.
using CombineBatchFn =
    std::function<absl::Status(const std::string& in_path, const std::string& out_path)>;

// One map task's input: a whole file, or the lines that start inside
// [offset, offset + length) of it.
struct MapInput {
  std::string path;
  uint64_t offset = 0;
  uint64_t length = 0;  // 0: the whole file
};

class AppRunner {
 public:
  virtual ~AppRunner() = default;
  // Maps one input; `emit` gets every intermediate pair.
  virtual absl::Status Map(const MapInput& input, const EmitFn& emit, Counters* counters,
                           uint64_t* bytes_in) = 0;
  // Reduces a partition: `records` yields pairs sorted by key; `output` gets one
  // (key, value) per output line.
  virtual absl::Status Reduce(const ForEachRecordFn& records, const EmitFn& output,
                              Counters* counters) = 0;
  // The app's map-side combiner, if it has one (else null): per key for
  // plugins (user counters go to `counters`), per batch for streaming.
  virtual CombineKeyFn KeyCombiner(Counters* counters) {
    (void)counters;
    return nullptr;
  }
  virtual CombineBatchFn BatchCombiner() { return nullptr; }
};

struct RunnerSpec {
  std::string app;     // bundled app name or plugin path
  std::string mapper;  // streaming mode: shell commands
  std::string reducer;
  std::string combiner;  // streaming mode, optional
  // Where bundled apps live (mr-app-NAME.so). Default: ../lib next to the binary.
  std::string app_dir;
  // Streaming mode: directory for temporary files.
  std::string temp_dir = "/tmp";
};

absl::StatusOr<std::unique_ptr<AppRunner>> MakeRunner(const RunnerSpec& spec);

// Loads a plugin (cached; plugins are never unloaded). `app` is a name or a path.
absl::StatusOr<const ds_mr_app*> LoadPlugin(const std::string& app, const std::string& app_dir);

// Directory of bundled apps next to the running binary: <exe dir>/../lib.
std::string DefaultAppDir();

// The bundled apps in `app_dir` ("" = DefaultAppDir()): NAME for every
// mr-app-NAME.so, sorted.
std::vector<std::string> BundledApps(const std::string& app_dir);

// Parses "key<TAB>value" lines (a line without a tab is a key with an empty
// value; empty lines are skipped) from `path`; counts them in *count.
absl::Status ForEachKeyValueLine(const std::string& path, const EmitFn& fn, uint64_t* count);

}  // namespace ds::mr
