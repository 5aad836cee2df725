// Storage: the Raft log, hard state and snapshot as the core sees them.
//
// Two implementations pass the same conformance tests (tests/raft/):
//   - MemoryStorage (raft/memory_storage.h): tests and the simulation; can lose
//     writes that were not synced, to model a crash.
//   - RocksDbStorage (raft/rocksdb_storage.h): production.
//
// The core only *reads* through this interface (deterministic queries: for a
// given sequence of Saves, every read returns the same answer). The driver (the
// Node, or the simulation harness) *writes*: it persists each Ready with Save()
// before sending the messages that depend on it, and calls ApplySnapshot() /
// Compact() as the application installs or takes snapshots. Reads must be cheap
// (served from memory) because the core calls them on its hot path.
//
// Index conventions (as etcd's raft): entries with index in
// [FirstIndex(), LastIndex()] are available, and Term() also answers for
// FirstIndex() - 1. SnapshotIndex() >= FirstIndex() - 1: a snapshot may leave
// the entries just below its index in the log (LogRetention), so a follower a
// little behind catches up from the log instead of receiving the snapshot. A
// fresh storage has FirstIndex() == 1, LastIndex() == 0, SnapshotIndex() == 0
// and Term(0) == 0.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/raft.pb.h"

namespace ds::raft {

// How much of the log CreateSnapshot keeps at or below the snapshot index
// (etcd keeps 5,000 entries): at most `entries` entries and at most `bytes`
// bytes of them, never entries already discarded. {0, 0}: none.
struct LogRetention {
  uint64_t entries = 0;
  uint64_t bytes = 0;
};

struct InitialState {
  pb::HardState hard_state;
  pb::ConfState conf_state;  // from the latest snapshot or conf-change entry persisted
  // The configuration in the snapshot's metadata (empty without a snapshot),
  // and every conf-change entry in the log after it, in index order: a
  // configuration entry that is not committed may be replaced, and then the
  // one before it applies again.
  pb::ConfState snapshot_conf_state;
  // (Entries kept at or below the snapshot index are covered by it: not here.)
  std::map<uint64_t, pb::ConfState> conf_entries;
};

class Storage {
 public:
  virtual ~Storage() = default;

  // ---- Read side (called by the core) ----

  virtual absl::StatusOr<InitialState> GetInitialState() = 0;
  // Entries in [lo, hi), at most max_bytes of serialized entries but always at
  // least one if any is in range. kOutOfRange if lo < FirstIndex() (compacted:
  // send a snapshot instead) or hi > LastIndex() + 1.
  virtual absl::StatusOr<std::vector<pb::Entry>> Entries(uint64_t lo, uint64_t hi,
                                                         uint64_t max_bytes) = 0;
  // Term of entry i, for i in [FirstIndex() - 1, LastIndex()]; kOutOfRange
  // otherwise (compacted or not yet written).
  virtual absl::StatusOr<uint64_t> Term(uint64_t i) = 0;
  virtual uint64_t FirstIndex() = 0;
  virtual uint64_t LastIndex() = 0;
  // Index of the latest snapshot (0 if none); >= FirstIndex() - 1.
  virtual uint64_t SnapshotIndex() = 0;
  // The latest snapshot (metadata index 0 if none).
  virtual absl::StatusOr<pb::Snapshot> GetSnapshot() = 0;

  // ---- Write side (called by the driver) ----

  // Persists one Ready atomically: the hard state (if non-null), then the
  // entries, which overwrite any existing entries from entries[0].index on
  // (a conflicting suffix is truncated); entries at or below SnapshotIndex()
  // are skipped (covered by the snapshot). With sync, returns only after the
  // write is durable (fsync); everything acknowledged to anyone must be synced.
  // Writes nothing and fails if the entries (past the snapshot) leave a gap,
  // are not contiguous, have a term lower than the entry before them
  // (kInvalidArgument), or would overwrite an entry at or below the stored
  // commit index (kFailedPrecondition).
  virtual absl::Status Save(const pb::HardState* hard_state, const std::vector<pb::Entry>& entries,
                            bool sync) = 0;
  // Installs a snapshot received from the leader: replaces the whole log with
  // the snapshot (FirstIndex() becomes metadata.index + 1). Synced.
  // kFailedPrecondition if it is older than the current snapshot or than the
  // stored commit index (it would discard committed entries).
  virtual absl::Status ApplySnapshot(const pb::Snapshot& snapshot) = 0;
  // The application took a snapshot of its state at `index` (<= the applied
  // index, which is <= LastIndex()): store it and discard entries <= index,
  // except the last ones `keep` allows. Synced. kFailedPrecondition if index
  // is older than the current snapshot.
  virtual absl::Status CreateSnapshot(uint64_t index, const pb::ConfState& conf_state,
                                      std::string data, const LogRetention& keep) = 0;
  absl::Status CreateSnapshot(uint64_t index, const pb::ConfState& conf_state, std::string data) {
    return CreateSnapshot(index, conf_state, std::move(data), LogRetention{});
  }

  // Bytes of persisted Raft state (hard state + log entries after the
  // snapshot index), excluding the snapshot and the entries kept below its
  // index (bounded by LogRetention): what 6.824 calls
  // persister.RaftStateSize(), and what decides when to snapshot next.
  virtual uint64_t RaftStateBytes() = 0;
  // Bytes of the stored snapshot data.
  virtual uint64_t SnapshotBytes() = 0;
};

// Where the log starts after a snapshot at `index` that keeps what `keep`
// allows: the entry before the first one kept (index itself if none is
// kept), never below `offset` (FirstIndex() - 1 now). `bytes_of(i)` is entry
// i's size; `kept_bytes` receives the kept entries' total.
uint64_t KeptLogStart(uint64_t index, uint64_t offset, const LogRetention& keep,
                      absl::FunctionRef<uint64_t(uint64_t i)> bytes_of, uint64_t* kept_bytes);

// Whether `entries` can follow entry (prev_index, prev_term) in a log: indexes
// prev_index + 1, prev_index + 2, ... and terms that never decrease.
// kInvalidArgument naming the first entry that does not.
absl::Status CheckEntriesFollow(uint64_t prev_index, uint64_t prev_term,
                                std::span<const pb::Entry> entries);

}  // namespace ds::raft
