#include "raft/core/log.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "raft/core/fatal.h"

namespace ds::raft {
namespace {

// Storage returned `entries` for [lo, hi): at least one, each at the next
// index, terms never decreasing (storage.h). Anything else is a corrupt log,
// and slicing on would hand the wrong entries to a follower or the application.
void CheckStoredEntries(uint64_t lo, uint64_t hi, const std::vector<pb::Entry>& entries) {
  if (entries.empty() || entries.size() > hi - lo) {
    Fatal(absl::StrCat("storage returned ", entries.size(), " entries for [", lo, ", ", hi, ")"));
  }
  for (size_t k = 0; k < entries.size(); ++k) {
    const pb::Entry& e = entries[k];
    if (e.index() != lo + k) {
      Fatal(absl::StrCat("storage returned entry ", e.index(), " at position ", k, " of [", lo,
                         ", ", hi, "), want index ", lo + k, ". Was the raft log corrupted?"));
    }
    if (k > 0 && e.term() < entries[k - 1].term()) {
      Fatal(absl::StrCat("storage returned entry ", e.index(), " with term ", e.term(),
                         " after entry ", e.index() - 1, " with term ", entries[k - 1].term(),
                         ": terms never decrease along a log. Was the raft log corrupted?"));
    }
  }
}

}  // namespace

uint64_t EntryBytes(const pb::Entry& e) { return e.ByteSizeLong(); }

RaftLog::RaftLog(Storage* storage) : storage_(storage) {
  offset_ = storage_->LastIndex() + 1;
  // Entries kept below the snapshot index are in the snapshot: the application
  // restores it and is fed what follows.
  committed_ = applying_ = applied_ = storage_->SnapshotIndex();
}

uint64_t RaftLog::FirstIndex() const {
  if (unstable_snapshot_) return unstable_snapshot_->metadata().index() + 1;
  return storage_->FirstIndex();
}

uint64_t RaftLog::LastIndex() const {
  if (!unstable_.empty()) return offset_ + unstable_.size() - 1;
  if (unstable_snapshot_) return unstable_snapshot_->metadata().index();
  return storage_->LastIndex();
}

uint64_t RaftLog::LastTerm() const { return TermOrZero(LastIndex()); }

absl::StatusOr<uint64_t> RaftLog::Term(uint64_t i) const {
  if (unstable_snapshot_) {
    const auto& md = unstable_snapshot_->metadata();
    if (i == md.index()) return md.term();
    if (i < md.index()) return absl::OutOfRangeError("compacted");
  }
  if (!unstable_.empty() && i >= offset_) {
    if (i - offset_ < unstable_.size()) return unstable_[i - offset_].term();
    return absl::OutOfRangeError("beyond last index");
  }
  if (unstable_snapshot_) return absl::OutOfRangeError("beyond last index");
  if (i > LastIndex()) return absl::OutOfRangeError("beyond last index");
  absl::StatusOr<uint64_t> t = storage_->Term(i);
  // Below the unstable entries, storage must answer every index from its
  // snapshot on (storage.h): those entries were saved before StableTo.
  if (!t.ok() && i + 1 >= storage_->FirstIndex()) {
    Fatal(absl::StrCat("storage has no term for index ", i, " (first index ",
                       storage_->FirstIndex(), ", last index ", LastIndex(), "): ",
                       t.status().ToString(), ". Was the raft log corrupted, truncated, or lost?"));
  }
  return t;
}

uint64_t RaftLog::TermOrZero(uint64_t i) const {
  auto t = Term(i);
  return t.ok() ? *t : 0;
}

bool RaftLog::MatchTerm(uint64_t i, uint64_t term) const {
  auto t = Term(i);
  return t.ok() && *t == term;
}

bool RaftLog::IsUpToDate(uint64_t last_index, uint64_t last_term) const {
  const uint64_t my_term = LastTerm();
  return last_term > my_term || (last_term == my_term && last_index >= LastIndex());
}

absl::StatusOr<std::vector<pb::Entry>> RaftLog::Slice(uint64_t lo, uint64_t hi,
                                                      uint64_t max_bytes) const {
  if (lo < FirstIndex()) return absl::OutOfRangeError("compacted");
  hi = std::min(hi, LastIndex() + 1);
  std::vector<pb::Entry> out;
  if (lo >= hi) return out;
  uint64_t bytes = 0;
  if (lo < offset_ && !unstable_snapshot_) {
    const uint64_t stored_hi = std::min(hi, offset_);
    auto stored = storage_->Entries(lo, stored_hi, max_bytes);
    // lo >= FirstIndex() (checked above) and everything below offset_ was
    // saved: the storage lost entries it acknowledged.
    if (!stored.ok()) {
      Fatal(absl::StrCat("storage cannot return entries [", lo, ", ", stored_hi,
                         "): ", stored.status().ToString(),
                         ". Was the raft log corrupted, truncated, or lost?"));
    }
    CheckStoredEntries(lo, stored_hi, *stored);
    out = std::move(*stored);
    for (const auto& e : out) bytes += EntryBytes(e);
    // Storage stopped early at the byte limit: do not continue past the gap.
    if (out.back().index() + 1 < stored_hi) return out;
  }
  for (uint64_t i = std::max(lo, offset_); i < hi; ++i) {
    const pb::Entry& e = unstable_[i - offset_];
    const uint64_t b = EntryBytes(e);
    if (!out.empty() && bytes + b > max_bytes) break;
    bytes += b;
    out.push_back(e);
  }
  return out;
}

std::vector<pb::Entry> RaftLog::AllEntriesFrom(uint64_t lo) const {
  auto s = Slice(std::max(lo, FirstIndex()), LastIndex() + 1, UINT64_MAX);
  return s.ok() ? std::move(*s) : std::vector<pb::Entry>{};
}

std::optional<uint64_t> RaftLog::MaybeAppend(uint64_t index, uint64_t log_term, uint64_t committed,
                                             const std::vector<pb::Entry>& entries) {
  if (!MatchTerm(index, log_term)) return std::nullopt;
  const uint64_t last_new = index + entries.size();
  const uint64_t conflict = FindConflict(entries);
  if (conflict != 0) {
    if (conflict <= index || conflict > last_new) {
      Fatal(absl::StrCat("conflicting entry ", conflict, " is outside the appended range (", index,
                         ", ", last_new, "]"));
    }
    const pb::Entry& e = entries[conflict - index - 1];
    // Log Matching and Leader Completeness (§5.3, §5.4): the leader holds
    // every committed entry, so its entries never differ from ours at or
    // below our commit index (and Core drops MsgApps below it).
    if (conflict <= committed_) {
      Fatal(absl::StrCat("entry ", conflict, " term ", e.term(), " conflicts with committed entry ",
                         conflict, " term ", TermOrZero(conflict), " (commit ", committed_, ")"));
    }
    Append(std::vector<pb::Entry>(entries.begin() + (conflict - index - 1), entries.end()));
  }
  // The leader's commit may be beyond what this message carries: only what
  // we now know matches its log is committed here.
  CommitTo(std::min(committed, last_new));
  return last_new;
}

uint64_t RaftLog::Append(const std::vector<pb::Entry>& entries) {
  if (entries.empty()) return LastIndex();
  const uint64_t after = entries.front().index();
  if (after <= committed_) {
    Fatal(absl::StrCat("appending from index ", after,
                       " would overwrite committed entries (commit ", committed_, ")"));
  }
  if (after > LastIndex() + 1) {
    Fatal(absl::StrCat("appending from index ", after, " leaves a gap after last index ",
                       LastIndex()));
  }
  uint64_t prev_term = TermOrZero(after - 1);
  for (size_t k = 0; k < entries.size(); ++k) {
    const pb::Entry& e = entries[k];
    if (e.index() != after + k) {
      Fatal(absl::StrCat("appended entry ", e.index(), " at position ", k, ", want index ",
                         after + k));
    }
    if (e.term() < prev_term) {
      Fatal(absl::StrCat("appended entry ", e.index(), " has term ", e.term(), ", lower than term ",
                         prev_term, " of the entry before it"));
    }
    prev_term = e.term();
  }
  if (after == offset_ + unstable_.size()) {
    unstable_.insert(unstable_.end(), entries.begin(), entries.end());
  } else if (after <= offset_) {
    // Replaces the unstable entries and (once saved) the storage tail.
    offset_ = after;
    unstable_ = entries;
  } else {
    unstable_.resize(after - offset_);
    unstable_.insert(unstable_.end(), entries.begin(), entries.end());
  }
  return LastIndex();
}

uint64_t RaftLog::FindConflict(const std::vector<pb::Entry>& entries) const {
  for (const auto& e : entries) {
    if (!MatchTerm(e.index(), e.term())) return e.index();
  }
  return 0;
}

std::pair<uint64_t, uint64_t> RaftLog::FindConflictByTerm(uint64_t index, uint64_t term) const {
  if (index > LastIndex()) return {index, 0};
  for (;; --index) {
    auto t = Term(index);
    if (!t.ok()) return {index, 0};
    if (*t <= term || index == 0) return {index, *t};
  }
}

void RaftLog::CommitTo(uint64_t index) {
  // Never backwards: a stale message may carry an older commit index.
  if (index <= committed_) return;
  if (index > LastIndex()) {
    Fatal(absl::StrCat("commit index ", index, " is beyond last index ", LastIndex(), " (commit ",
                       committed_, "). Was the raft log corrupted, truncated, or lost?"));
  }
  committed_ = index;
}

bool RaftLog::MaybeCommit(uint64_t index, uint64_t term) {
  if (index > committed_ && TermOrZero(index) == term) {
    CommitTo(index);
    return true;
  }
  return false;
}

void RaftLog::AppliedTo(uint64_t index) {
  if (index > committed_ || index < applied_) {
    Fatal(absl::StrCat("applied index ", index, " is out of range [applied ", applied_, ", commit ",
                       committed_, "]"));
  }
  applied_ = index;
  applying_ = std::max(applying_, applied_);
}

uint64_t RaftLog::NextToApply() const {
  // The driver compacts only what the application has applied, and a
  // snapshot from the leader moves applying_ along with it (Restore). A log
  // that starts later would skip entries the application never saw.
  if (applying_ + 1 < FirstIndex()) {
    Fatal(absl::StrCat("log compacted up to index ", FirstIndex() - 1, " but only entries up to ",
                       applying_, " were handed out for applying (applied ", applied_, ")"));
  }
  return applying_ + 1;
}

bool RaftLog::HasNextCommittedEntries() const { return NextToApply() <= committed_; }

std::vector<pb::Entry> RaftLog::NextCommittedEntries(uint64_t max_bytes) {
  const uint64_t lo = NextToApply();
  if (lo > committed_) return {};
  auto s = Slice(lo, committed_ + 1, max_bytes);
  if (!s.ok() || s->empty()) {
    Fatal(absl::StrCat("cannot read committed entries [", lo, ", ", committed_ + 1,
                       "): ", s.ok() ? "none returned" : s.status().ToString()));
  }
  applying_ = s->back().index();
  return std::move(*s);
}

void RaftLog::StableTo(uint64_t index, uint64_t term) {
  if (unstable_.empty() || index < offset_) return;
  if (index - offset_ >= unstable_.size()) return;
  // A newer leader may have replaced the entry meanwhile: only the exact
  // (index, term) that was saved becomes stable.
  if (unstable_[index - offset_].term() != term) return;
  unstable_.erase(unstable_.begin(), unstable_.begin() + (index - offset_ + 1));
  offset_ = index + 1;
}

void RaftLog::StableSnapTo(uint64_t index) {
  if (unstable_snapshot_ && unstable_snapshot_->metadata().index() == index) {
    unstable_snapshot_.reset();
  }
}

void RaftLog::Restore(const pb::Snapshot& snapshot) {
  const uint64_t index = snapshot.metadata().index();
  // Core installs only snapshots past the commit index; an older one would
  // discard committed entries and move commit (and applied) backwards.
  if (index <= committed_) {
    Fatal(absl::StrCat("snapshot at index ", index, " term ", snapshot.metadata().term(),
                       " is not newer than commit ", committed_, " (applied ", applied_, ")"));
  }
  committed_ = index;
  applying_ = std::max(applying_, index);
  unstable_.clear();
  offset_ = index + 1;
  unstable_snapshot_ = snapshot;
}

absl::StatusOr<pb::Snapshot> RaftLog::Snapshot() const {
  if (unstable_snapshot_) return *unstable_snapshot_;
  return storage_->GetSnapshot();
}

}  // namespace ds::raft
