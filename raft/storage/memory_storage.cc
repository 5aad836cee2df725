#include "raft/storage/memory_storage.h"

#include <algorithm>
#include <span>

#include "absl/strings/str_cat.h"
#include "raft/core/log.h"

namespace ds::raft {

MemoryStorage::MemoryStorage() { entries_.emplace_back(); }

uint64_t MemoryStorage::FirstIndexLocked() const { return entries_[0].index() + 1; }
uint64_t MemoryStorage::LastIndexLocked() const {
  return entries_[0].index() + entries_.size() - 1;
}

uint64_t MemoryStorage::FirstIndex() {
  absl::MutexLock l(&mu_);
  return FirstIndexLocked();
}

uint64_t MemoryStorage::LastIndex() {
  absl::MutexLock l(&mu_);
  return LastIndexLocked();
}

uint64_t MemoryStorage::SnapshotIndex() {
  absl::MutexLock l(&mu_);
  return snapshot_.metadata().index();
}

pb::HardState MemoryStorage::hard_state() {
  absl::MutexLock l(&mu_);
  return hard_state_;
}

absl::StatusOr<InitialState> MemoryStorage::GetInitialState() {
  absl::MutexLock l(&mu_);
  InitialState st;
  st.hard_state = hard_state_;
  st.snapshot_conf_state = snapshot_.metadata().conf_state();
  st.conf_state = st.snapshot_conf_state;
  // Configuration entries newer than the snapshot; the newest wins.
  for (size_t k = 1; k < entries_.size(); ++k) {
    const pb::Entry& e = entries_[k];
    if (e.type() != pb::ENTRY_CONF_CHANGE || e.index() <= snapshot_.metadata().index()) continue;
    pb::ConfState cs;
    if (!cs.ParseFromString(e.data())) {
      return absl::DataLossError(absl::StrCat("bad conf-change entry at ", e.index()));
    }
    st.conf_state = cs;
    st.conf_entries[e.index()] = std::move(cs);
  }
  return st;
}

absl::StatusOr<std::vector<pb::Entry>> MemoryStorage::Entries(uint64_t lo, uint64_t hi,
                                                              uint64_t max_bytes) {
  absl::MutexLock l(&mu_);
  if (lo < FirstIndexLocked()) return absl::OutOfRangeError(absl::StrCat("compacted: ", lo));
  if (hi > LastIndexLocked() + 1 || lo > hi) {
    return absl::OutOfRangeError(absl::StrCat("beyond last index: ", hi));
  }
  std::vector<pb::Entry> out;
  const uint64_t offset = entries_[0].index();
  uint64_t bytes = 0;
  for (uint64_t i = lo; i < hi; ++i) {
    const pb::Entry& e = entries_[i - offset];
    const uint64_t b = EntryBytes(e);
    if (!out.empty() && bytes + b > max_bytes) break;
    bytes += b;
    out.push_back(e);
  }
  return out;
}

absl::StatusOr<uint64_t> MemoryStorage::Term(uint64_t i) {
  absl::MutexLock l(&mu_);
  const uint64_t offset = entries_[0].index();
  if (i < offset) return absl::OutOfRangeError(absl::StrCat("compacted: ", i));
  if (i - offset >= entries_.size()) return absl::OutOfRangeError(absl::StrCat("unavailable: ", i));
  return entries_[i - offset].term();
}

absl::StatusOr<pb::Snapshot> MemoryStorage::GetSnapshot() {
  absl::MutexLock l(&mu_);
  return snapshot_;
}

void MemoryStorage::MarkSyncedLocked() {
  durable_hard_state_ = hard_state_;
  durable_entries_.reset();
}

absl::Status MemoryStorage::Save(const pb::HardState* hard_state,
                                 const std::vector<pb::Entry>& entries, bool sync) {
  absl::MutexLock l(&mu_);
  const uint64_t offset = entries_[0].index();
  // Entries at or below the snapshot are already covered by it.
  auto begin = entries.begin();
  while (begin != entries.end() && begin->index() <= snapshot_.metadata().index()) ++begin;
  if (begin != entries.end()) {
    // Checked before anything changes, so a rejected Save writes nothing.
    const uint64_t first = begin->index();
    if (first > LastIndexLocked() + 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("gap: appending ", first, " after ", LastIndexLocked()));
    }
    if (first <= hard_state_.commit()) {
      return absl::FailedPreconditionError(
          absl::StrCat("appending from index ", first,
                       " would overwrite committed entries (commit ", hard_state_.commit(), ")"));
    }
    if (absl::Status s = CheckEntriesFollow(first - 1, entries_[first - 1 - offset].term(),
                                            std::span(begin, entries.end()));
        !s.ok()) {
      return s;
    }
  }
  if (!sync && !entries.empty() && !durable_entries_) {
    durable_entries_ = Durable{entries_, entry_bytes_};
  }
  if (hard_state != nullptr) hard_state_ = *hard_state;
  if (begin != entries.end()) {
    const uint64_t keep = begin->index() - offset;
    for (size_t i = keep; i < entries_.size(); ++i) entry_bytes_ -= EntryBytes(entries_[i]);
    entries_.resize(keep);
    for (auto it = begin; it != entries.end(); ++it) {
      entry_bytes_ += EntryBytes(*it);
      entries_.push_back(*it);
    }
  }
  if (sync) MarkSyncedLocked();
  return absl::OkStatus();
}

absl::Status MemoryStorage::ApplySnapshot(const pb::Snapshot& snapshot) {
  absl::MutexLock l(&mu_);
  const auto& md = snapshot.metadata();
  if (md.index() <= snapshot_.metadata().index()) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", md.index(), " older than ", snapshot_.metadata().index()));
  }
  // The snapshot replaces the whole log: one below the commit index would
  // discard committed entries it does not cover.
  if (md.index() < hard_state_.commit()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "snapshot ", md.index(), " is older than commit index ", hard_state_.commit()));
  }
  snapshot_ = snapshot;
  entries_.clear();
  entries_.emplace_back();
  entries_[0].set_index(md.index());
  entries_[0].set_term(md.term());
  entry_bytes_ = 0;
  kept_bytes_ = 0;
  if (hard_state_.commit() < md.index()) hard_state_.set_commit(md.index());
  MarkSyncedLocked();
  return absl::OkStatus();
}

absl::Status MemoryStorage::CreateSnapshot(uint64_t index, const pb::ConfState& conf_state,
                                           std::string data, const LogRetention& keep) {
  absl::MutexLock l(&mu_);
  const uint64_t offset = entries_[0].index();
  if (index <= snapshot_.metadata().index()) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", index, " not newer than ", snapshot_.metadata().index()));
  }
  if (index > LastIndexLocked()) {
    return absl::OutOfRangeError(absl::StrCat("snapshot ", index, " beyond last index"));
  }
  pb::Snapshot snap;
  auto* md = snap.mutable_metadata();
  md->set_index(index);
  md->set_term(entries_[index - offset].term());
  *md->mutable_conf_state() = conf_state;
  snap.set_data(std::move(data));
  snapshot_ = std::move(snap);
  // Entries (start, index] stay; entry `start` becomes the dummy.
  uint64_t kept = 0;
  const uint64_t start = KeptLogStart(
      index, offset, keep, [&](uint64_t i) { return EntryBytes(entries_[i - offset]); }, &kept);
  for (uint64_t i = 1; i <= start - offset; ++i) entry_bytes_ -= EntryBytes(entries_[i]);
  entries_.erase(entries_.begin(), entries_.begin() + (start - offset));
  entries_[0].clear_data();
  entries_[0].set_type(pb::ENTRY_NORMAL);
  kept_bytes_ = kept;
  MarkSyncedLocked();
  return absl::OkStatus();
}

uint64_t MemoryStorage::RaftStateBytes() {
  absl::MutexLock l(&mu_);
  return hard_state_.ByteSizeLong() + entry_bytes_ - kept_bytes_;
}

uint64_t MemoryStorage::SnapshotBytes() {
  absl::MutexLock l(&mu_);
  return snapshot_.data().size();
}

void MemoryStorage::SimulateCrash() {
  absl::MutexLock l(&mu_);
  hard_state_ = durable_hard_state_;
  if (durable_entries_) {
    entries_ = std::move(durable_entries_->entries);
    entry_bytes_ = durable_entries_->entry_bytes;
  }
  durable_entries_.reset();
}

}  // namespace ds::raft
