// Small helpers shared by the Raft I/O tests.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "proto/raft.pb.h"

namespace ds::raft::testing_util {

// A fresh directory under $TMPDIR, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr ? tmp : "/tmp") + "/raftio-XXXXXX";
    path_ = mkdtemp(pattern.data()) != nullptr ? pattern : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// An entry whose payload encodes its index and term, so a garbled entry is
// detectable.
inline pb::Entry Entry(uint64_t index, uint64_t term, size_t payload_bytes = 16) {
  pb::Entry e;
  e.set_index(index);
  e.set_term(term);
  std::string data = std::to_string(index) + ":" + std::to_string(term) + ":";
  data.resize(std::max(payload_bytes, data.size()), 'p');
  e.set_data(std::move(data));
  return e;
}

// Whether `e` is exactly what Entry(e.index(), e.term(), size) produced.
inline bool EntryIntact(const pb::Entry& e, size_t payload_bytes = 16) {
  return e.data() == Entry(e.index(), e.term(), payload_bytes).data();
}

// Payload size of entry `index` written by raft_crash_writer: it varies so that
// batches cross RocksDB block and WAL record boundaries in different places.
inline size_t CrashPayloadBytes(uint64_t index) { return 16 + (index * 7919) % 3000; }

inline std::vector<uint64_t> Indexes(const std::vector<pb::Entry>& es) {
  std::vector<uint64_t> out;
  for (const auto& e : es) out.push_back(e.index());
  return out;
}

}  // namespace ds::raft::testing_util
