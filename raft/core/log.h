// RaftLog: the log as the core sees it: the stable part in Storage plus the
// unstable part (entries and possibly a snapshot received from the leader) that
// the driver has not persisted yet (etcd's raftLog + unstable).
//
//   snapshot | storage entries [FirstIndex, ...] | unstable entries [offset, ...]
//
// Unstable entries may overlap the tail of storage (after a conflict they
// replace it); reads prefer the unstable copy.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/raft.pb.h"
#include "raft/storage/storage.h"

namespace ds::raft {

class RaftLog {
 public:
  // Restores from storage: committed and applied start at the snapshot index.
  explicit RaftLog(Storage* storage);

  uint64_t FirstIndex() const;
  uint64_t LastIndex() const;
  uint64_t LastTerm() const;
  // Term of entry i; kOutOfRange if compacted or not present. Fail-stops if
  // storage cannot answer for an index it must hold.
  absl::StatusOr<uint64_t> Term(uint64_t i) const;
  // Term of entry i, or 0 if unknown (compacted or beyond the end).
  uint64_t TermOrZero(uint64_t i) const;
  bool MatchTerm(uint64_t i, uint64_t term) const;
  // §5.4.1: is a log ending at (last_index, last_term) at least as up to date?
  bool IsUpToDate(uint64_t last_index, uint64_t last_term) const;

  // Entries in [lo, hi) with at most max_bytes of payload (at least one).
  // kOutOfRange if lo < FirstIndex() (compacted). Fail-stops if storage
  // cannot return entries it holds, or returns them out of order.
  absl::StatusOr<std::vector<pb::Entry>> Slice(uint64_t lo, uint64_t hi, uint64_t max_bytes) const;
  // All entries from lo to the end (tests and invariants).
  std::vector<pb::Entry> AllEntriesFrom(uint64_t lo) const;

  // MsgApp handling on a follower: if entry `index` has `log_term`, appends
  // `entries` (truncating any conflicting suffix), advances commit to
  // min(committed, last new index) and returns the last new index.
  // Fail-stops (Fatal) if an entry conflicts with a committed one.
  std::optional<uint64_t> MaybeAppend(uint64_t index, uint64_t log_term, uint64_t committed,
                                      const std::vector<pb::Entry>& entries);
  // Appends after truncating at entries[0].index; returns the new last index.
  // Fail-stops if that truncates a committed entry, leaves a gap, or the
  // entries are not contiguous with terms that never decrease.
  uint64_t Append(const std::vector<pb::Entry>& entries);
  // First index in `entries` whose term conflicts with (or is missing from)
  // the log; 0 if all are already present.
  uint64_t FindConflict(const std::vector<pb::Entry>& entries) const;
  // Fast backtracking: the largest index <= index whose term is <= term.
  // Returns (index, term-at-index).
  std::pair<uint64_t, uint64_t> FindConflictByTerm(uint64_t index, uint64_t term) const;

  uint64_t committed() const { return committed_; }
  uint64_t applied() const { return applied_; }
  // Advances commit (a lower index is ignored). Fail-stops past LastIndex().
  void CommitTo(uint64_t index);
  // Leader commit rule: commit index if it is in the log with `term` (§5.4.2).
  bool MaybeCommit(uint64_t index, uint64_t term);
  // Fail-stops unless applied <= index <= committed.
  void AppliedTo(uint64_t index);

  bool HasNextCommittedEntries() const;
  // Committed entries not yet handed out, at most max_bytes (at least one).
  // Marks them as being applied.
  std::vector<pb::Entry> NextCommittedEntries(uint64_t max_bytes);

  // Unstable data for the next Ready.
  const std::vector<pb::Entry>& unstable_entries() const { return unstable_; }
  const std::optional<pb::Snapshot>& unstable_snapshot() const { return unstable_snapshot_; }
  // The driver persisted entries up to (index, term) / the snapshot at index.
  void StableTo(uint64_t index, uint64_t term);
  void StableSnapTo(uint64_t index);

  // Replaces the log with a snapshot from the leader (kept unstable until
  // the driver installs it). Fail-stops unless it is newer than commit.
  void Restore(const pb::Snapshot& snapshot);
  // The latest snapshot (unstable one first, else from storage).
  absl::StatusOr<pb::Snapshot> Snapshot() const;

  Storage* storage() const { return storage_; }

 private:
  // First index not yet handed out for applying; fail-stops if the log was
  // compacted past it.
  uint64_t NextToApply() const;

  Storage* storage_;
  // Unstable entries start at offset_ (index of unstable_[0] if any).
  std::vector<pb::Entry> unstable_;
  uint64_t offset_ = 1;
  std::optional<pb::Snapshot> unstable_snapshot_;

  uint64_t committed_ = 0;
  // Entries <= applying_ were handed out in a Ready; <= applied_ were applied.
  uint64_t applying_ = 0;
  uint64_t applied_ = 0;
};

// Serialized payload size, used for the byte limits.
uint64_t EntryBytes(const pb::Entry& e);

}  // namespace ds::raft
