// MemoryStorage: Storage in memory, for tests and the simulation. It models a
// disk with a volatile write cache: SimulateCrash() drops whatever was saved
// with sync = false since the last synced write, as a power loss would.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "raft/storage/storage.h"

namespace ds::raft {

class MemoryStorage : public Storage {
 public:
  MemoryStorage();

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

  // Power loss: forget every write made with sync = false since the last
  // synced write (a synced write flushes everything before it, as fsync does).
  void SimulateCrash();

  pb::HardState hard_state();

 private:
  struct Durable {
    std::vector<pb::Entry> entries;
    uint64_t entry_bytes;
  };
  void MarkSyncedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t FirstIndexLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t LastIndexLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  pb::HardState hard_state_ ABSL_GUARDED_BY(mu_);
  pb::Snapshot snapshot_ ABSL_GUARDED_BY(mu_);
  // entries_[0] is a dummy at FirstIndex() - 1 carrying its term: the
  // snapshot index, or below it when entries were kept (LogRetention).
  std::vector<pb::Entry> entries_ ABSL_GUARDED_BY(mu_);
  // Sum of EntryBytes(entries_[1..]), and the part of it at or below the
  // snapshot index.
  uint64_t entry_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t kept_bytes_ ABSL_GUARDED_BY(mu_) = 0;

  // State as of the last sync. Unsynced writes are almost always commit-only
  // hard states, so the entries are copied only if an unsynced write touches them.
  pb::HardState durable_hard_state_ ABSL_GUARDED_BY(mu_);
  std::optional<Durable> durable_entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ds::raft
