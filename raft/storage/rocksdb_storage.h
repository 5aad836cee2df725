// RocksDbStorage: the production Storage. One RocksDB database per Raft group.
//
// Layout (default column family, one-byte key prefixes so the log sorts by index):
//   "h"                      -> pb::HardState
//   "m"                      -> pb::SnapshotMetadata of the latest snapshot
//   "d"                      -> snapshot data (bytes)
//   "c"                      -> index and term (8 bytes big-endian each) of the
//                               entry before the first one kept, FirstIndex() - 1;
//                               absent: the snapshot's (no entries kept below it)
//   "e" + 8-byte big-endian i -> pb::Entry with index i
//
// Every mutation is one WriteBatch, so a crash (kill -9, power loss with sync)
// leaves either the whole Save/ApplySnapshot/CreateSnapshot or none of it: the
// log never has a torn tail or a hole. The un-compacted log is also kept in
// memory, so the core's reads (Entries, Term, FirstIndex, LastIndex) never touch
// the disk and are deterministic.
//
// Thread safety: reads may come from any thread; writes must come from one
// thread at a time (the Node's Raft thread). The mutex is never held across a
// disk write.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "raft/storage/storage.h"

namespace rocksdb {
class DB;
}

namespace ds::raft {

struct RocksDbStorageOptions {
  // Create the database if `path` holds none. Default: true.
  bool create_if_missing = true;
  // Size of one RocksDB memtable. Raft entries are written once and deleted by
  // compaction soon after, so a moderate memtable keeps most of them from ever
  // reaching an SST file. Unit: bytes. Default: 64 MiB.
  uint64_t write_buffer_bytes = 64ull << 20;
};

class RocksDbStorage : public Storage {
 public:
  // Opens (or creates) the database in directory `path` and loads the log into
  // memory. Fails on I/O errors or a corrupt/inconsistent database (kDataLoss:
  // a hole in the log, a term lower than the entry before it, a commit index
  // past the last entry, snapshot metadata without its data).
  static absl::StatusOr<std::unique_ptr<RocksDbStorage>> Open(
      const std::string& path, const RocksDbStorageOptions& options = {});

  ~RocksDbStorage() override;
  RocksDbStorage(const RocksDbStorage&) = delete;
  RocksDbStorage& operator=(const RocksDbStorage&) = delete;

  absl::StatusOr<InitialState> GetInitialState() override;
  absl::StatusOr<std::vector<pb::Entry>> Entries(uint64_t lo, uint64_t hi,
                                                 uint64_t max_bytes) override;
  absl::StatusOr<uint64_t> Term(uint64_t i) override;
  uint64_t FirstIndex() override;
  uint64_t LastIndex() override;
  uint64_t SnapshotIndex() override;
  absl::StatusOr<pb::Snapshot> GetSnapshot() override;

  absl::Status Save(const pb::HardState* hard_state, const std::vector<pb::Entry>& entries,
                    bool sync) override;
  absl::Status ApplySnapshot(const pb::Snapshot& snapshot) override;
  using Storage::CreateSnapshot;
  absl::Status CreateSnapshot(uint64_t index, const pb::ConfState& conf_state, std::string data,
                              const LogRetention& keep) override;

  uint64_t RaftStateBytes() override;
  uint64_t SnapshotBytes() override;

  // Number of Save/ApplySnapshot/CreateSnapshot calls that asked for fsync
  // (for the benchmark's fsyncs-per-entry figure).
  uint64_t synced_writes() const;

 private:
  explicit RocksDbStorage(std::unique_ptr<rocksdb::DB> db);
  absl::Status Load();

  std::unique_ptr<rocksdb::DB> db_;

  mutable absl::Mutex mu_;
  pb::HardState hard_state_ ABSL_GUARDED_BY(mu_);
  pb::SnapshotMetadata snapshot_meta_ ABSL_GUARDED_BY(mu_);
  uint64_t snapshot_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Entries (offset_, last]; entries_[k].index() == offset_ + 1 + k.
  // offset_ <= snapshot_meta_.index(); offset_term_ is entry offset_'s term.
  uint64_t offset_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t offset_term_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<pb::Entry> entries_ ABSL_GUARDED_BY(mu_);
  // Sum of entries_[*].ByteSizeLong(), and the part of it at or below the
  // snapshot index.
  uint64_t entry_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t kept_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t synced_writes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ds::raft
