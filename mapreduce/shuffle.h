// The map side and the reduce side of the shuffle.
//
// A map task's output for one reduce partition is a *run*: groups sorted by
// key (bytewise), each group one key and its values (sorted):
//   group := varint(key_len) key varint(n) n * (varint(value_len) value)
// Varints are LEB128. A run is written to a temporary name and renamed; a
// reduce task fetches one run per map task and merges them (no sort).
//
// MapOutputBuffer collects a map task's emitted pairs in one hash table keyed
// by key (each distinct key stored once, its values in a list), folds a key's
// values with the combiner as they pile up, and writes the R runs at the end
// (one sort of the distinct keys). Past its memory budget it spills sorted
// runs and merges them at the end.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mapreduce/runner.h"

namespace ds::mr {

// Appends LEB128 varints and length-prefixed bytes; flushes to a file.
class RunWriter {
 public:
  // Creates (truncates) `path`.
  static absl::StatusOr<std::unique_ptr<RunWriter>> Create(const std::string& path);
  ~RunWriter();
  // One group: `key` and its values (already sorted).
  void WriteGroup(std::string_view key, const std::vector<std::string_view>& values);
  // Flushes and closes; reports any write error.
  absl::Status Close();
  uint64_t bytes() const { return bytes_; }

 private:
  RunWriter(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  void Flush();
  int fd_;
  std::string path_;
  std::string buffer_;
  uint64_t bytes_ = 0;
  int error_ = 0;
};

// Reads a run held in memory (a fetched buffer or a mapped file).
class RunReader {
 public:
  explicit RunReader(std::string_view data) : data_(data) {}
  // Advances to the next group; false at the end. A malformed run is an
  // error (DataLoss).
  absl::StatusOr<bool> Next();
  std::string_view key() const { return key_; }
  // Appends the current group's values to `out`.
  absl::Status Values(std::vector<std::string_view>* out) const;

 private:
  std::string_view data_;
  size_t pos_ = 0;
  std::string_view key_;
  uint64_t num_values_ = 0;
  size_t values_begin_ = 0;
  bool have_group_ = false;
};

// A file mapped read-only for its whole length (an empty file maps nothing).
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  std::string_view data() const { return {static_cast<const char*>(addr_), size_}; }

 private:
  MappedFile(void* addr, size_t size) : addr_(addr), size_(size) {}
  void* addr_;
  size_t size_;
};

// Calls fn(key, values) for every distinct key of the runs, in key order,
// with the values of that key from every run, sorted. `values` may be
// modified by fn.
absl::Status MergeRuns(
    const std::vector<std::string_view>& runs,
    const std::function<absl::Status(std::string_view key, std::vector<std::string_view>& values)>&
        fn);

struct MapOutputOptions {
  // R, the number of partitions (reduce tasks).
  int reduces = 1;
  // Directory for spills and temporary files (the worker's work dir).
  std::string temp_dir;
  // Unique prefix of this attempt's spill and temporary file names.
  std::string temp_prefix;
  // Memory the table may use (keys, values, bookkeeping) before it spills a
  // sorted run. Unit: bytes. Default: 256 MiB.
  uint64_t memory_budget_bytes = 256ull << 20;
  // Null: no combiner. At most one of the two is set.
  CombineKeyFn combine_key;
  CombineBatchFn combine_batch;
  // combine_key runs on a key once it has this many values (and again each
  // time as many more piled up). Default: 64.
  uint32_t combine_threshold = 64;
};

struct MapOutputCounters {
  int64_t records_out = 0;  // pairs emitted by the map
  int64_t bytes_out = 0;    // bytes of the final runs
  int64_t combine_records_in = 0;
  int64_t combine_records_out = 0;
  int64_t spilled_runs = 0;
};

class MapOutputBuffer {
 public:
  explicit MapOutputBuffer(MapOutputOptions options);
  ~MapOutputBuffer();  // removes spill files

  // Adds one emitted pair. May combine or spill (an error then is kept and
  // returned by Finish).
  void Add(std::string_view key, std::string_view value);
  // Writes partition r to paths[r] (via a temporary name and rename) for
  // every r, merging spills and combining. Call once.
  absl::Status Finish(const std::vector<std::string>& paths);
  const MapOutputCounters& counters() const { return counters_; }

 private:
  struct Entry {
    std::string_view key;  // in key_blocks_
    // The key's values back to back, each varint(len) bytes: contiguous, so
    // gathering them for the combiner reads one buffer (a list of nodes
    // scattered over memory cost a third of the map's time).
    std::string values;
    uint32_t count = 0;
    uint32_t combine_at = 0;
  };

  std::string_view StoreKey(std::string_view key);
  void Append(Entry& e, std::string_view value);
  static void GatherValues(const Entry& e, std::vector<std::string_view>* out);
  absl::Status CombineEntry(Entry& e);
  uint64_t MemoryUsed() const;
  void Clear();
  // Writes the table's contents as one run per partition to paths[r].
  absl::Status WriteTable(const std::vector<std::string>& paths, bool final);
  // Streaming combiner over the whole table: replaces the table's contents by
  // the command's output.
  absl::Status CombineBatch();
  absl::Status Spill();

  MapOutputOptions options_;
  absl::flat_hash_map<std::string_view, uint32_t> index_;
  std::vector<Entry> entries_;
  std::vector<std::unique_ptr<char[]>> key_blocks_;
  size_t key_block_used_ = 0;
  size_t key_block_size_ = 0;
  uint64_t key_bytes_ = 0;
  // Bytes of every entry's values buffer (capacity, as allocated).
  uint64_t value_bytes_ = 0;
  std::vector<std::string_view> scratch_;
  std::vector<std::string> combined_;
  // spills_[k][r]: partition r of spill k.
  std::vector<std::vector<std::string>> spills_;
  absl::Status error_;
  MapOutputCounters counters_;
};

// Writes `data` to `path` through a temporary file in the same directory.
absl::Status RenameIntoPlace(const std::string& tmp, const std::string& path);

}  // namespace ds::mr
