#include "raft/storage/rocksdb_storage.h"

#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace ds::raft {
namespace {

constexpr char kHardStateKey[] = "h";
constexpr char kSnapshotMetaKey[] = "m";
constexpr char kSnapshotDataKey[] = "d";
constexpr char kLogStartKey[] = "c";
constexpr char kEntryPrefix = 'e';

void PutBigEndian(uint64_t v, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (56 - 8 * i)) & 0xff));
}

uint64_t GetBigEndian(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

std::string LogStartValue(uint64_t index, uint64_t term) {
  std::string v;
  PutBigEndian(index, &v);
  PutBigEndian(term, &v);
  return v;
}

// "e" + big-endian index: RocksDB's bytewise order is then index order, so a
// prefix of the log is one contiguous key range (one DeleteRange).
std::string EntryKey(uint64_t index) {
  std::string key(1, kEntryPrefix);
  PutBigEndian(index, &key);
  return key;
}

uint64_t DecodeEntryKey(const rocksdb::Slice& key) { return GetBigEndian(key.data() + 1); }

absl::Status ToStatus(const rocksdb::Status& s, const char* what) {
  if (s.ok()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("rocksdb ", what, ": ", s.ToString()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<RocksDbStorage>> RocksDbStorage::Open(
    const std::string& path, const RocksDbStorageOptions& options) {
  rocksdb::Options db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.write_buffer_size = options.write_buffer_bytes;
  // Raft is the only writer; a crash must never lose a synced write, and an
  // unsynced write that made it to the WAL file survives a process kill.
  db_options.manual_wal_flush = false;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, path, &raw);
  if (!s.ok()) return ToStatus(s, "open");
  std::unique_ptr<RocksDbStorage> storage(new RocksDbStorage(std::unique_ptr<rocksdb::DB>(raw)));
  if (absl::Status st = storage->Load(); !st.ok()) return st;
  return storage;
}

RocksDbStorage::RocksDbStorage(std::unique_ptr<rocksdb::DB> db) : db_(std::move(db)) {}

RocksDbStorage::~RocksDbStorage() {
  if (db_ != nullptr) db_->Close().PermitUncheckedError();
}

absl::Status RocksDbStorage::Load() {
  absl::MutexLock lock(&mu_);
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), kHardStateKey, &value);
  if (s.ok()) {
    if (!hard_state_.ParseFromString(value)) return absl::DataLossError("corrupt hard state");
  } else if (!s.IsNotFound()) {
    return ToStatus(s, "get hard state");
  }
  s = db_->Get(rocksdb::ReadOptions(), kSnapshotMetaKey, &value);
  if (s.ok()) {
    if (!snapshot_meta_.ParseFromString(value)) {
      return absl::DataLossError("corrupt snapshot metadata");
    }
    s = db_->Get(rocksdb::ReadOptions(), kSnapshotDataKey, &value);
    // Metadata and data are written in one batch.
    if (s.IsNotFound()) {
      return absl::DataLossError(
          absl::StrCat("snapshot at index ", snapshot_meta_.index(), " has metadata but no data"));
    }
    if (!s.ok()) return ToStatus(s, "get snapshot data");
    snapshot_bytes_ = value.size();
  } else if (!s.IsNotFound()) {
    return ToStatus(s, "get snapshot metadata");
  }

  offset_ = snapshot_meta_.index();
  offset_term_ = snapshot_meta_.term();
  s = db_->Get(rocksdb::ReadOptions(), kLogStartKey, &value);
  if (s.ok()) {
    if (value.size() != 16) return absl::DataLossError("corrupt log start");
    offset_ = GetBigEndian(value.data());
    offset_term_ = GetBigEndian(value.data() + 8);
    if (offset_ > snapshot_meta_.index() || offset_term_ > snapshot_meta_.term()) {
      return absl::DataLossError(absl::StrCat("log starts after entry ", offset_, " (term ",
                                              offset_term_, "), past the snapshot at ",
                                              snapshot_meta_.index()));
    }
  } else if (!s.IsNotFound()) {
    return ToStatus(s, "get log start");
  }

  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  const std::string end = std::string(1, kEntryPrefix + 1);
  uint64_t expected = offset_ + 1;
  uint64_t prev_term = offset_term_;
  for (it->Seek(EntryKey(expected)); it->Valid() && it->key().compare(end) < 0; it->Next()) {
    if (it->key().size() != 9) return absl::DataLossError("malformed entry key");
    const uint64_t index = DecodeEntryKey(it->key());
    // Batches are atomic, so the persisted log is contiguous; a hole means the
    // database was damaged outside our control.
    if (index != expected) {
      return absl::DataLossError(absl::StrCat("log hole: expected ", expected, " got ", index));
    }
    pb::Entry entry;
    if (!entry.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())) ||
        entry.index() != index) {
      return absl::DataLossError(absl::StrCat("corrupt entry ", index));
    }
    // Terms never decrease along a log (Save refuses such a write).
    if (entry.term() < prev_term) {
      return absl::DataLossError(absl::StrCat("entry ", index, " has term ", entry.term(),
                                              ", lower than term ", prev_term,
                                              " of the entry before it"));
    }
    prev_term = entry.term();
    entry_bytes_ += entry.ByteSizeLong();
    if (index <= snapshot_meta_.index()) kept_bytes_ += entry.ByteSizeLong();
    entries_.push_back(std::move(entry));
    ++expected;
  }
  if (absl::Status st = ToStatus(it->status(), "scan log"); !st.ok()) return st;
  // Entries kept below the snapshot index were written with it in one batch.
  const uint64_t last = offset_ + entries_.size();
  if (last < snapshot_meta_.index() ||
      (offset_ < snapshot_meta_.index() &&
       entries_[snapshot_meta_.index() - offset_ - 1].term() != snapshot_meta_.term())) {
    return absl::DataLossError(absl::StrCat("the log kept below the snapshot at ",
                                            snapshot_meta_.index(), " does not match it"));
  }
  // The commit index is saved in the same batch as the entries it covers (or
  // a later one), so it never points past the stored log.
  if (hard_state_.commit() > last) {
    return absl::DataLossError(absl::StrCat("hard state commit index ", hard_state_.commit(),
                                            " is beyond last index ", last, " (snapshot ",
                                            snapshot_meta_.index(),
                                            "). Was the raft log corrupted, truncated, or lost?"));
  }
  return absl::OkStatus();
}

absl::StatusOr<InitialState> RocksDbStorage::GetInitialState() {
  absl::MutexLock lock(&mu_);
  InitialState state;
  state.hard_state = hard_state_;
  state.snapshot_conf_state = snapshot_meta_.conf_state();
  state.conf_state = state.snapshot_conf_state;
  // Configuration entries newer than the snapshot; the newest wins.
  for (const pb::Entry& e : entries_) {
    if (e.type() != pb::ENTRY_CONF_CHANGE || e.index() <= snapshot_meta_.index()) continue;
    pb::ConfState cs;
    if (!cs.ParseFromString(e.data())) {
      return absl::DataLossError(absl::StrCat("corrupt conf change at ", e.index()));
    }
    state.conf_state = cs;
    state.conf_entries[e.index()] = std::move(cs);
  }
  return state;
}

absl::StatusOr<std::vector<pb::Entry>> RocksDbStorage::Entries(uint64_t lo, uint64_t hi,
                                                               uint64_t max_bytes) {
  absl::MutexLock lock(&mu_);
  const uint64_t first = offset_ + 1;
  const uint64_t last = offset_ + entries_.size();
  if (lo < first) return absl::OutOfRangeError(absl::StrCat("entry ", lo, " compacted"));
  if (hi > last + 1) return absl::OutOfRangeError(absl::StrCat("entry ", hi - 1, " not written"));
  if (lo > hi) return absl::InvalidArgumentError("lo > hi");
  std::vector<pb::Entry> out;
  uint64_t bytes = 0;
  for (uint64_t i = lo; i < hi; ++i) {
    const pb::Entry& e = entries_[i - first];
    bytes += e.ByteSizeLong();
    if (!out.empty() && bytes > max_bytes) break;
    out.push_back(e);
  }
  return out;
}

absl::StatusOr<uint64_t> RocksDbStorage::Term(uint64_t i) {
  absl::MutexLock lock(&mu_);
  if (i == offset_) return offset_term_;
  if (i < offset_) return absl::OutOfRangeError(absl::StrCat("term of ", i, ": compacted"));
  if (i > offset_ + entries_.size()) {
    return absl::OutOfRangeError(absl::StrCat("term of ", i, ": not written"));
  }
  return entries_[i - offset_ - 1].term();
}

uint64_t RocksDbStorage::FirstIndex() {
  absl::MutexLock lock(&mu_);
  return offset_ + 1;
}

uint64_t RocksDbStorage::LastIndex() {
  absl::MutexLock lock(&mu_);
  return offset_ + entries_.size();
}

uint64_t RocksDbStorage::SnapshotIndex() {
  absl::MutexLock lock(&mu_);
  return snapshot_meta_.index();
}

absl::StatusOr<pb::Snapshot> RocksDbStorage::GetSnapshot() {
  pb::Snapshot snapshot;
  {
    absl::MutexLock lock(&mu_);
    if (snapshot_meta_.index() == 0) return snapshot;
  }
  // The data can be large and is not kept in memory. Metadata and data come
  // from one RocksDB snapshot, so they always match even if a new snapshot is
  // being written concurrently.
  const rocksdb::Snapshot* view = db_->GetSnapshot();
  rocksdb::ReadOptions ro;
  ro.snapshot = view;
  std::string meta;
  rocksdb::Status s = db_->Get(ro, kSnapshotMetaKey, &meta);
  if (s.ok()) s = db_->Get(ro, kSnapshotDataKey, snapshot.mutable_data());
  db_->ReleaseSnapshot(view);
  if (!s.ok()) return ToStatus(s, "get snapshot");
  if (!snapshot.mutable_metadata()->ParseFromString(meta)) {
    return absl::DataLossError("corrupt snapshot metadata");
  }
  return snapshot;
}

absl::Status RocksDbStorage::Save(const pb::HardState* hard_state,
                                  const std::vector<pb::Entry>& entries, bool sync) {
  uint64_t snap, last, commit;
  {
    absl::MutexLock lock(&mu_);
    snap = snapshot_meta_.index();
    last = offset_ + entries_.size();
    commit = hard_state_.commit();
  }
  // Entries at or below the snapshot are already covered by it (a stale
  // append racing a snapshot install): skip them, as etcd does.
  size_t skip = 0;
  while (skip < entries.size() && entries[skip].index() <= snap) ++skip;
  if (skip < entries.size()) {
    const uint64_t start = entries[skip].index();
    if (start > last + 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("gap: appending ", start, " after last ", last));
    }
    if (start <= commit) {
      return absl::FailedPreconditionError(
          absl::StrCat("appending from index ", start,
                       " would overwrite committed entries (commit ", commit, ")"));
    }
    absl::StatusOr<uint64_t> prev_term = Term(start - 1);
    if (!prev_term.ok()) return prev_term.status();
    if (absl::Status st = CheckEntriesFollow(start - 1, *prev_term,
                                             std::span(entries.begin() + skip, entries.end()));
        !st.ok()) {
      return st;
    }
  }

  rocksdb::WriteBatch batch;
  std::string buf;
  if (hard_state != nullptr) {
    hard_state->SerializeToString(&buf);
    batch.Put(kHardStateKey, buf);
  }
  uint64_t new_last = last;
  if (skip < entries.size()) {
    for (size_t k = skip; k < entries.size(); ++k) {
      entries[k].SerializeToString(&buf);
      batch.Put(EntryKey(entries[k].index()), buf);
    }
    new_last = entries.back().index();
    // A conflicting suffix beyond the new entries is truncated (§5.3).
    if (new_last < last) batch.DeleteRange(EntryKey(new_last + 1), EntryKey(last + 1));
  }
  if (batch.Count() == 0) return absl::OkStatus();
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  if (absl::Status st = ToStatus(db_->Write(wo, &batch), "save"); !st.ok()) return st;

  absl::MutexLock lock(&mu_);
  if (sync) ++synced_writes_;
  if (hard_state != nullptr) hard_state_ = *hard_state;
  if (skip < entries.size()) {
    const uint64_t start = entries[skip].index();
    while (offset_ + entries_.size() >= start) {
      entry_bytes_ -= entries_.back().ByteSizeLong();
      entries_.pop_back();
    }
    for (size_t k = skip; k < entries.size(); ++k) {
      entry_bytes_ += entries[k].ByteSizeLong();
      entries_.push_back(entries[k]);
    }
  }
  return absl::OkStatus();
}

absl::Status RocksDbStorage::ApplySnapshot(const pb::Snapshot& snapshot) {
  uint64_t first, last, snap_index, commit;
  {
    absl::MutexLock lock(&mu_);
    first = offset_ + 1;
    last = offset_ + entries_.size();
    snap_index = snapshot_meta_.index();
    commit = hard_state_.commit();
  }
  if (snapshot.metadata().index() < snap_index) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", snapshot.metadata().index(), " older than ", snap_index));
  }
  // The snapshot replaces the whole log: one below the commit index would
  // discard committed entries it does not cover.
  if (snapshot.metadata().index() < commit) {
    return absl::FailedPreconditionError(absl::StrCat("snapshot ", snapshot.metadata().index(),
                                                      " is older than commit index ", commit));
  }
  rocksdb::WriteBatch batch;
  batch.Put(kSnapshotMetaKey, snapshot.metadata().SerializeAsString());
  batch.Put(kSnapshotDataKey, snapshot.data());
  // The snapshot replaces the whole log (etcd's ApplySnapshot semantics).
  batch.Delete(kLogStartKey);
  if (last >= first) batch.DeleteRange(EntryKey(first), EntryKey(last + 1));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  if (absl::Status st = ToStatus(db_->Write(wo, &batch), "apply snapshot"); !st.ok()) return st;

  absl::MutexLock lock(&mu_);
  ++synced_writes_;
  snapshot_meta_ = snapshot.metadata();
  snapshot_bytes_ = snapshot.data().size();
  offset_ = snapshot.metadata().index();
  offset_term_ = snapshot.metadata().term();
  entries_.clear();
  entry_bytes_ = 0;
  kept_bytes_ = 0;
  return absl::OkStatus();
}

absl::Status RocksDbStorage::CreateSnapshot(uint64_t index, const pb::ConfState& conf_state,
                                            std::string data, const LogRetention& keep) {
  pb::SnapshotMetadata meta;
  uint64_t offset, start, start_term, kept;
  {
    absl::MutexLock lock(&mu_);
    const uint64_t snap = snapshot_meta_.index();
    if (index < snap) {
      return absl::FailedPreconditionError(
          absl::StrCat("snapshot at ", index, " older than current ", snap));
    }
    offset = offset_;
    if (index > offset + entries_.size()) {
      return absl::OutOfRangeError(
          absl::StrCat("snapshot at ", index, " beyond last index ", offset + entries_.size()));
    }
    auto term_of = [&](uint64_t i) {
      return i == offset ? offset_term_ : entries_[i - offset - 1].term();
    };
    meta.set_index(index);
    meta.set_term(term_of(index));
    *meta.mutable_conf_state() = conf_state;
    // Entries (start, index] stay; the log then starts after `start`.
    start = KeptLogStart(
        index, offset, keep, [&](uint64_t i) { return entries_[i - offset - 1].ByteSizeLong(); },
        &kept);
    start_term = term_of(start);
  }
  rocksdb::WriteBatch batch;
  batch.Put(kSnapshotMetaKey, meta.SerializeAsString());
  batch.Put(kSnapshotDataKey, data);
  if (start < index) {
    batch.Put(kLogStartKey, LogStartValue(start, start_term));
  } else {
    batch.Delete(kLogStartKey);
  }
  if (start > offset) batch.DeleteRange(EntryKey(offset + 1), EntryKey(start + 1));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  if (absl::Status st = ToStatus(db_->Write(wo, &batch), "create snapshot"); !st.ok()) return st;

  absl::MutexLock lock(&mu_);
  ++synced_writes_;
  while (!entries_.empty() && entries_.front().index() <= start) {
    entry_bytes_ -= entries_.front().ByteSizeLong();
    entries_.pop_front();
  }
  offset_ = start;
  offset_term_ = start_term;
  kept_bytes_ = kept;
  snapshot_meta_ = std::move(meta);
  snapshot_bytes_ = data.size();
  return absl::OkStatus();
}

uint64_t RocksDbStorage::RaftStateBytes() {
  absl::MutexLock lock(&mu_);
  return entry_bytes_ - kept_bytes_ + hard_state_.ByteSizeLong();
}

uint64_t RocksDbStorage::SnapshotBytes() {
  absl::MutexLock lock(&mu_);
  return snapshot_bytes_;
}

uint64_t RocksDbStorage::synced_writes() const {
  absl::MutexLock lock(&mu_);
  return synced_writes_;
}

}  // namespace ds::raft
