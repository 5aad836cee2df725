#include "raft/core/log.h"

#include <algorithm>

namespace ds::raft {

uint64_t EntryBytes(const pb::Entry& e) { return e.ByteSizeLong(); }

RaftLog::RaftLog(Storage* storage) : storage_(storage) {
  const uint64_t first = storage_->FirstIndex();
  offset_ = storage_->LastIndex() + 1;
  committed_ = applying_ = applied_ = first - 1;
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
  return storage_->Term(i);
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
    auto stored = storage_->Entries(lo, std::min(hi, offset_), max_bytes);
    if (!stored.ok()) return stored.status();
    out = std::move(*stored);
    for (const auto& e : out) bytes += EntryBytes(e);
    // Storage stopped early at the byte limit: do not continue past the gap.
    if (out.empty() || out.back().index() + 1 < std::min(hi, offset_)) return out;
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
  // A conflict at or below commit would contradict Log Matching; such
  // entries are already committed here and identical, so skip them.
  if (conflict != 0) {
    const uint64_t from = std::max(conflict, committed_ + 1);
    if (from <= last_new) {
      std::vector<pb::Entry> tail(entries.begin() + (from - index - 1), entries.end());
      Append(tail);
    }
  }
  CommitTo(std::min(committed, last_new));
  return last_new;
}

uint64_t RaftLog::Append(const std::vector<pb::Entry>& entries) {
  if (entries.empty()) return LastIndex();
  const uint64_t after = entries.front().index();
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
  index = std::min(index, LastIndex());
  if (index > committed_) committed_ = index;
}

bool RaftLog::MaybeCommit(uint64_t index, uint64_t term) {
  if (index > committed_ && TermOrZero(index) == term) {
    CommitTo(index);
    return true;
  }
  return false;
}

void RaftLog::AppliedTo(uint64_t index) {
  if (index > applied_) applied_ = index;
  applying_ = std::max(applying_, applied_);
}

bool RaftLog::HasNextCommittedEntries() const {
  const uint64_t lo = std::max(applying_, FirstIndex() - 1) + 1;
  return lo <= committed_;
}

std::vector<pb::Entry> RaftLog::NextCommittedEntries(uint64_t max_bytes) {
  const uint64_t lo = std::max(applying_, FirstIndex() - 1) + 1;
  if (lo > committed_) return {};
  auto s = Slice(lo, committed_ + 1, max_bytes);
  if (!s.ok() || s->empty()) return {};
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
