// Records on disk and an external sort, used by mr-sequential (the reference;
// the workers' shuffle is in mapreduce/shuffle.h), plus file helpers and the
// partition hash shared by both.
//
// Format of a sort spill: a sequence of [u32 key_len][u32 value_len]
// [key][value] in host byte order (read back by the process that wrote it).
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ds::mr {

// FNV-1a (32-bit) of the key, masked to 31 bits: the 6.824 ihash, so keys land
// in the same reduce partition as in the reference lab.
uint32_t KeyHash(std::string_view key);

class RecordWriter {
 public:
  // Creates (truncates) `path`.
  static absl::StatusOr<std::unique_ptr<RecordWriter>> Create(const std::string& path);
  ~RecordWriter();
  void Write(std::string_view key, std::string_view value);
  // Flushes and closes; reports any write error.
  absl::Status Close();
  uint64_t bytes() const { return bytes_; }

 private:
  RecordWriter(FILE* f, std::string path) : f_(f), path_(std::move(path)) {}
  FILE* f_;
  std::string path_;
  uint64_t bytes_ = 0;
};

class RecordReader {
 public:
  static absl::StatusOr<std::unique_ptr<RecordReader>> Open(const std::string& path);
  ~RecordReader();
  // Reads the next record; false at the end. A truncated file is an error.
  absl::StatusOr<bool> Next(std::string* key, std::string* value);

 private:
  RecordReader(FILE* f, std::string path) : f_(f), path_(std::move(path)) {}
  FILE* f_;
  std::string path_;
};

// Sorts (key, value) records by key, then value (so output never depends on
// the order in which map outputs arrive). Keeps up to `memory_budget_bytes` in
// memory; beyond that, sorted runs are spilled to files in `spill_dir` and
// merged at the end.
class ExternalSorter {
 public:
  ExternalSorter(std::string spill_dir, uint64_t memory_budget_bytes);
  ~ExternalSorter();  // removes spill files
  absl::Status Add(std::string_view key, std::string_view value);
  // Calls `fn` for every record in sorted order. Call once, after all Adds.
  absl::Status ForEach(
      const std::function<absl::Status(std::string_view key, std::string_view value)>& fn);
  int spilled_runs() const { return static_cast<int>(runs_.size()); }

 private:
  struct Rec {
    // The key's first 8 bytes, big-endian, zero-padded: most comparisons are
    // decided by this alone, without touching the arena (the sort is the
    // reduce's hot spot).
    uint64_t key_prefix;
    uint64_t offset;
    uint32_t key_len;
    uint32_t value_len;
  };
  std::string_view Key(const Rec& r) const { return {arena_.data() + r.offset, r.key_len}; }
  std::string_view Value(const Rec& r) const {
    return {arena_.data() + r.offset + r.key_len, r.value_len};
  }
  void SortInMemory();
  absl::Status Spill();

  std::string spill_dir_;
  uint64_t memory_budget_bytes_;
  std::string arena_;
  std::vector<Rec> recs_;
  std::vector<std::string> runs_;
};

// Writes `contents` to a temporary name next to `path` and renames it over
// `path`, so readers see the old file or the whole new one, never a part.
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents);
absl::StatusOr<std::string> ReadFile(const std::string& path);
// The lines of `path` that start inside [offset, offset + length), with their
// newlines: a split boundary inside a line gives the line to the split where
// it starts, so consecutive splits of a file see every line exactly once.
absl::StatusOr<std::string> ReadSplit(const std::string& path, uint64_t offset, uint64_t length);
std::string ErrnoMessage(const std::string& what, int err);

}  // namespace ds::mr
