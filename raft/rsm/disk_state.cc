#include "raft/rsm/disk_state.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/options.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/utilities/write_batch_with_index.h"

namespace ds::rsm {
namespace {

constexpr std::string_view kManifestMagic = "DSCKPT01";
constexpr char kCurrentFile[] = "CURRENT_DB";
constexpr char kSnapshotsDir[] = "snapshots";
constexpr char kIdKey[] = "id";
constexpr char kPartial[] = ".partial";

rocksdb::Slice S(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
std::string_view V(const rocksdb::Slice& s) { return std::string_view(s.data(), s.size()); }

uint64_t RandomId() {
  std::random_device rd;
  uint64_t id = 0;
  while (id == 0) id = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  return id;
}

// The applied index in a checkpoint's name, if it is one ("ckpt-INDEX-ID",
// with or without ".partial").
std::optional<uint64_t> CheckpointIndex(absl::string_view name) {
  if (!absl::ConsumePrefix(&name, "ckpt-")) return std::nullopt;
  absl::ConsumeSuffix(&name, kPartial);
  const size_t dash = name.find('-');
  // (absl::string_view: Debian's Abseil does not take std::string_view here.)
  uint64_t index = 0;
  if (dash == absl::string_view::npos || !absl::SimpleAtoi(name.substr(0, dash), &index)) {
    return std::nullopt;
  }
  return index;
}

}  // namespace

std::string EncodeManifest(const pb::CheckpointManifest& manifest) {
  std::string out(kManifestMagic);
  manifest.AppendToString(&out);
  return out;
}

absl::StatusOr<std::optional<pb::CheckpointManifest>> DecodeManifest(std::string_view in) {
  absl::string_view data(in.data(), in.size());
  if (!absl::ConsumePrefix(&data,
                           absl::string_view(kManifestMagic.data(), kManifestMagic.size()))) {
    return std::nullopt;
  }
  pb::CheckpointManifest manifest;
  if (!manifest.ParseFromArray(data.data(), static_cast<int>(data.size())) ||
      !IsPlainName(manifest.name())) {
    return absl::DataLossError("snapshot data has the checkpoint prefix but no valid manifest");
  }
  for (const pb::CheckpointFile& f : manifest.files()) {
    if (!IsPlainName(f.name())) {
      return absl::DataLossError(absl::StrCat("checkpoint manifest names file '", f.name(), "'"));
    }
  }
  return manifest;
}

namespace {

std::optional<rocksdb::CompressionType> Compression(const std::string& name) {
  if (name == "none") return rocksdb::kNoCompression;
  if (name == "snappy") return rocksdb::kSnappyCompression;
  if (name == "lz4") return rocksdb::kLZ4Compression;
  if (name == "zstd") return rocksdb::kZSTD;
  return std::nullopt;
}

}  // namespace

bool IsCompressionName(const std::string& name) { return Compression(name).has_value(); }

bool IsPlainName(std::string_view name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of(std::string_view("/\0", 2)) == std::string_view::npos;
}

using KeyRanges = std::vector<std::pair<std::string, std::string>>;

// The range [from, to) of `ranges` holding `key`, if any.
const std::pair<std::string, std::string>* RangeOf(const KeyRanges& ranges, std::string_view key) {
  for (const auto& r : ranges) {
    if (key >= r.first && key < r.second) return &r;
  }
  return nullptr;
}

// The base (database) side of a scan while range deletions are pending in the
// batch: the database's keys minus those inside one of the ranges.
class RangeSkippingIterator final : public rocksdb::Iterator {
 public:
  RangeSkippingIterator(rocksdb::Iterator* base, const KeyRanges* ranges)
      : base_(base), ranges_(ranges) {}
  bool Valid() const override { return base_->Valid(); }
  void SeekToFirst() override {
    base_->SeekToFirst();
    SkipForward();
  }
  void SeekToLast() override {
    base_->SeekToLast();
    SkipBackward();
  }
  void Seek(const rocksdb::Slice& target) override {
    base_->Seek(target);
    SkipForward();
  }
  void SeekForPrev(const rocksdb::Slice& target) override {
    base_->SeekForPrev(target);
    SkipBackward();
  }
  void Next() override {
    base_->Next();
    SkipForward();
  }
  void Prev() override {
    base_->Prev();
    SkipBackward();
  }
  rocksdb::Slice key() const override { return base_->key(); }
  rocksdb::Slice value() const override { return base_->value(); }
  rocksdb::Status status() const override { return base_->status(); }

 private:
  void SkipForward() {
    while (base_->Valid()) {
      const auto* r = RangeOf(*ranges_, V(base_->key()));
      if (r == nullptr) return;
      base_->Seek(r->second);
    }
  }
  void SkipBackward() {
    while (base_->Valid()) {
      const auto* r = RangeOf(*ranges_, V(base_->key()));
      if (r == nullptr) return;
      base_->SeekForPrev(r->first);
      if (base_->Valid() && V(base_->key()) == r->first) base_->Prev();
    }
  }
  std::unique_ptr<rocksdb::Iterator> base_;
  const KeyRanges* ranges_;
};

// Replays a batch's operations into another (after its range deletions).
class CopyOps final : public rocksdb::WriteBatch::Handler {
 public:
  explicit CopyOps(rocksdb::WriteBatch* to) : to_(to) {}
  rocksdb::Status PutCF(uint32_t, const rocksdb::Slice& k, const rocksdb::Slice& v) override {
    return to_->Put(k, v);
  }
  rocksdb::Status DeleteCF(uint32_t, const rocksdb::Slice& k) override { return to_->Delete(k); }
  rocksdb::Status SingleDeleteCF(uint32_t, const rocksdb::Slice& k) override {
    return to_->SingleDelete(k);
  }
  rocksdb::Status DeleteRangeCF(uint32_t, const rocksdb::Slice& b,
                                const rocksdb::Slice& e) override {
    return to_->DeleteRange(b, e);
  }
  rocksdb::Status MergeCF(uint32_t, const rocksdb::Slice&, const rocksdb::Slice&) override {
    return rocksdb::Status::NotSupported("merge");
  }

 private:
  rocksdb::WriteBatch* to_;
};

// AppState over one key prefix of the one column family, through the
// pending batch. (One column family, not one per user: a column family that
// is rarely written keeps every write-ahead log file alive until it flushes,
// and checkpoints would copy them all.)
class DiskState::BatchedState final : public AppState {
 public:
  BatchedState(DiskState* owner, char prefix) : owner_(owner), prefix_(1, prefix) {}

  std::optional<std::string> Get(std::string_view key) const override {
    const std::string k = Full(key);
    std::string value;
    rocksdb::Status s = RangeOf(owner_->range_deletes_, k) != nullptr
                            // Whatever the database holds there is deleted: only writes made
                            // after the range deletion count.
                            ? owner_->batch_->GetFromBatch(rocksdb::DBOptions(), S(k), &value)
                            : owner_->batch_->GetWriteBatch()->Count() == 0
                                  ? owner_->db_->Get(rocksdb::ReadOptions(), S(k), &value)
                                  : owner_->batch_->GetFromBatchAndDB(
                                        owner_->db_, rocksdb::ReadOptions(), S(k), &value);
    if (s.IsNotFound()) return std::nullopt;
    if (!s.ok()) owner_->Fail("read", s.ToString());
    return value;
  }
  void Put(std::string_view key, std::string_view value) override {
    rocksdb::Status s = owner_->batch_->Put(S(Full(key)), S(value));
    if (!s.ok()) owner_->Fail("write", s.ToString());
  }
  void Delete(std::string_view key) override {
    rocksdb::Status s = owner_->batch_->Delete(S(Full(key)));
    if (!s.ok()) owner_->Fail("write", s.ToString());
  }
  void DeleteRange(std::string_view begin, std::string_view end) override {
    // WriteBatchWithIndex has no range deletion. The range is kept aside and
    // goes first into the batch's one atomic write (Commit); the keys this
    // batch already wrote inside it are deleted in the batch itself, so what
    // is written into the range from now on comes after the range deletion.
    // Cost: the batch's own keys in the range, not the database's.
    const std::string from = Full(begin);
    const std::string to = Limit(end);
    if (from >= to) return;
    std::vector<std::string> pending;
    std::unique_ptr<rocksdb::WBWIIterator> it(owner_->batch_->NewIterator());
    for (it->Seek(S(from)); it->Valid(); it->Next()) {
      const std::string_view k = V(it->Entry().key);
      if (k >= to) break;
      if (pending.empty() || pending.back() != k) pending.emplace_back(k);
    }
    for (const std::string& k : pending) {
      rocksdb::Status s = owner_->batch_->Delete(S(k));
      if (!s.ok()) owner_->Fail("write", s.ToString());
    }
    owner_->range_deletes_.emplace_back(from, to);
  }
  void Scan(std::string_view begin, std::string_view end, Visitor visit) const override {
    const std::string limit = Limit(end);
    std::unique_ptr<rocksdb::Iterator> it(owner_->db_->NewIterator(rocksdb::ReadOptions()));
    if (!owner_->range_deletes_.empty()) {
      it.reset(new RangeSkippingIterator(it.release(), &owner_->range_deletes_));
    }
    if (owner_->batch_->GetWriteBatch()->Count() > 0) {
      it.reset(owner_->batch_->NewIteratorWithBase(it.release()));
    }
    for (it->Seek(S(Full(begin))); it->Valid(); it->Next()) {
      const std::string_view key = V(it->key());
      if (key >= limit) break;
      if (!visit(key.substr(1), V(it->value()))) break;
    }
    if (!it->status().ok()) owner_->Fail("scan", it->status().ToString());
  }

 private:
  // The full key `end` names; past this prefix's keys (the prefix byte plus
  // one) if empty.
  std::string Limit(std::string_view end) const {
    return end.empty() ? std::string(1, static_cast<char>(prefix_[0] + 1)) : Full(end);
  }
  std::string Full(std::string_view key) const {
    std::string k;
    k.reserve(key.size() + 1);
    k += prefix_;
    k.append(key.data(), key.size());
    return k;
  }
  DiskState* const owner_;
  const std::string prefix_;
};

DiskState::DiskState(DiskStateOptions options)
    : options_(std::move(options)),
      cache_(rocksdb::NewLRUCache(options_.block_cache_bytes)),
      batch_(std::make_unique<rocksdb::WriteBatchWithIndex>(rocksdb::BytewiseComparator(), 0,
                                                            /*overwrite_key=*/true)),
      app_(std::make_unique<BatchedState>(this, 'a')),
      meta_(std::make_unique<BatchedState>(this, 'm')) {}

DiskState::~DiskState() { CloseLive(); }

AppState* DiskState::app() { return app_.get(); }
const AppState* DiskState::app() const { return app_.get(); }

std::string DiskState::Path(std::string_view name) const {
  return absl::StrCat(options_.dir, "/", absl::string_view(name.data(), name.size()));
}

std::string DiskState::snapshots_dir() const { return Path(kSnapshotsDir); }

void DiskState::Fail(const std::string& what, const std::string& why) const {
  // The state would no longer be what the log says: stop (fail-stop, as on a
  // failed Raft log write). The log is intact; a restart replays it.
  std::fprintf(stderr, "state machine storage in %s: %s failed: %s\n", options_.dir.c_str(),
               what.c_str(), why.c_str());
  std::abort();
}

absl::StatusOr<std::unique_ptr<DiskState>> DiskState::Open(DiskStateOptions options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("state directory not set");
  if (!IsCompressionName(options.compression)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown compression \"", options.compression,
                                                   "\" (none, snappy, lz4 or zstd)"));
  }
  std::error_code ec;
  std::filesystem::create_directories(options.dir + "/" + kSnapshotsDir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create ", options.dir, ": ", ec.message()));
  }
  std::unique_ptr<DiskState> state(new DiskState(std::move(options)));
  absl::StatusOr<std::string> current = common::ReadWholeFile(state->Path(kCurrentFile));
  std::string live;
  if (current.ok()) {
    live = std::string(absl::StripAsciiWhitespace(*current));
    if (!IsPlainName(live)) {
      return absl::DataLossError(absl::StrCat(state->Path(kCurrentFile), " is corrupt"));
    }
  } else if (!absl::IsNotFound(current.status())) {
    return current.status();
  }
  // Leftovers of an interrupted restore or of a fresh start that crashed
  // before naming its database.
  for (const auto& entry : std::filesystem::directory_iterator(state->options_.dir, ec)) {
    const std::string name = entry.path().filename().string();
    uint64_t n = 0;
    absl::string_view digits = name;
    if (absl::ConsumePrefix(&digits, "db-")) {
      absl::ConsumeSuffix(&digits, ".tmp");
      if (absl::SimpleAtoi(digits, &n)) state->next_live_ = std::max(state->next_live_, n + 1);
      if (name != live) {
        if (absl::Status s = common::RemoveTree(entry.path().string()); !s.ok()) return s;
      }
    }
  }
  for (const auto& entry : std::filesystem::directory_iterator(state->snapshots_dir(), ec)) {
    if (absl::EndsWith(entry.path().filename().string(), ".tmp")) {
      if (absl::Status s = common::RemoveTree(entry.path().string()); !s.ok()) return s;
    }
  }
  if (live.empty()) {
    live = absl::StrCat("db-", state->next_live_++);
    if (absl::Status s = state->OpenLive(live); !s.ok()) return s;
    if (absl::Status s = common::WriteFileDurably(state->Path(kCurrentFile), live); !s.ok()) {
      return s;
    }
  } else if (absl::Status s = state->OpenLive(live); !s.ok()) {
    return s;
  }
  return state;
}

absl::Status DiskState::OpenLive(const std::string& name) {
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache_;
  // Index and filter blocks count against the cache: memory stays bounded by
  // the flag, not by the number of files.
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  rocksdb::Options db;
  db.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  db.write_buffer_size = options_.memtable_bytes;
  db.compression = Compression(options_.compression).value_or(rocksdb::kSnappyCompression);
  db.max_write_buffer_number = 2;
  db.level_compaction_dynamic_level_bytes = true;
  db.create_if_missing = true;
  db.max_background_jobs = 2;
  db.keep_log_file_num = 2;
  db.max_log_file_size = 4 << 20;
  rocksdb::DB* opened = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db, Path(name), &opened);
  if (!s.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot open state in ", Path(name), ": ", s.ToString()));
  }
  CloseLive();
  db_ = opened;
  live_ = name;
  batch_->Clear();
  range_deletes_.clear();
  std::optional<std::string> id = GetMeta(kIdKey);
  uint64_t parsed = 0;
  if (id && id->size() == sizeof(parsed)) {
    std::memcpy(&parsed, id->data(), sizeof(parsed));
    id_ = parsed;
  } else {
    id_ = RandomId();
    PutMeta(kIdKey, std::string_view(reinterpret_cast<const char*>(&id_), sizeof(id_)));
    Commit();
  }
  return absl::OkStatus();
}

void DiskState::CloseLive() {
  if (db_ == nullptr) return;
  batch_->Clear();
  range_deletes_.clear();
  db_->Close();
  delete db_;
  db_ = nullptr;
}

std::optional<std::string> DiskState::GetMeta(std::string_view key) const {
  return meta_->Get(key);
}
void DiskState::PutMeta(std::string_view key, std::string_view value) { meta_->Put(key, value); }
void DiskState::DeleteMeta(std::string_view key) { meta_->Delete(key); }
void DiskState::ScanMeta(std::string_view prefix, AppState::Visitor visit) const {
  meta_->Scan(prefix, "", [&](std::string_view key, std::string_view value) {
    return absl::StartsWith(absl::string_view(key.data(), key.size()),
                            absl::string_view(prefix.data(), prefix.size())) &&
           visit(key, value);
  });
}

void DiskState::Commit() {
  if (batch_->GetWriteBatch()->Count() == 0 && range_deletes_.empty()) return;
  rocksdb::WriteOptions wo;
  wo.sync = false;
  rocksdb::Status s;
  if (range_deletes_.empty()) {
    s = db_->Write(wo, batch_->GetWriteBatch());
  } else {
    // The range deletions first, then the batch's operations (DeleteRange
    // explains why that order is the order they were made in).
    rocksdb::WriteBatch all;
    for (const auto& [from, to] : range_deletes_) {
      s = all.DeleteRange(S(from), S(to));
      if (!s.ok()) break;
    }
    CopyOps copy(&all);
    if (s.ok()) s = batch_->GetWriteBatch()->Iterate(&copy);
    if (s.ok()) s = db_->Write(wo, &all);
  }
  if (!s.ok()) Fail("write", s.ToString());
  batch_->Clear();
  range_deletes_.clear();
}

void DiskState::Step(std::string_view step) const {
  if (options_.fail_point) options_.fail_point(step);
}

absl::StatusOr<pb::CheckpointManifest> DiskState::Checkpoint(uint64_t applied_index) {
  Commit();
  Step("checkpoint:begin");
  pb::CheckpointManifest manifest;
  manifest.set_name(absl::StrFormat("ckpt-%020d-%016x", applied_index, id_));
  manifest.set_source_id(id_);
  manifest.set_applied_index(applied_index);
  const std::string path = absl::StrCat(snapshots_dir(), "/", manifest.name());
  // Left by a crash after the checkpoint and before the Raft snapshot named it.
  if (absl::Status s = common::RemoveTree(path); !s.ok()) return s;
  rocksdb::Checkpoint* raw = nullptr;
  rocksdb::Status s = rocksdb::Checkpoint::Create(db_, &raw);
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  // Never flush: the write-ahead log since the last flush is copied instead,
  // so the cost does not depend on how full the memtables are.
  if (s.ok()) s = checkpoint->CreateCheckpoint(path, std::numeric_limits<uint64_t>::max());
  if (!s.ok()) {
    return absl::InternalError(absl::StrCat("checkpoint into ", path, ": ", s.ToString()));
  }
  Step("checkpoint:created");
  if (absl::Status st = common::SyncPath(snapshots_dir()); !st.ok()) return st;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(path, ec)) {
    pb::CheckpointFile* f = manifest.add_files();
    f->set_name(entry.path().filename().string());
    f->set_size(entry.file_size(ec));
    if (ec) break;
  }
  if (ec) return absl::InternalError(absl::StrCat("list ", path, ": ", ec.message()));
  Step("checkpoint:synced");
  return manifest;
}

absl::Status DiskState::Restore(const pb::CheckpointManifest& manifest) {
  const std::string src = absl::StrCat(snapshots_dir(), "/", manifest.name());
  for (const pb::CheckpointFile& f : manifest.files()) {
    absl::StatusOr<uint64_t> size = common::FileSize(absl::StrCat(src, "/", f.name()));
    if (!size.ok()) return size.status();
    if (*size != f.size()) {
      return absl::DataLossError(absl::StrCat("checkpoint ", manifest.name(), " file ", f.name(),
                                              " has ", *size, " bytes, expected ", f.size()));
    }
  }
  const std::string name = absl::StrCat("db-", next_live_++);
  const std::string tmp = Path(name + ".tmp");
  if (absl::Status s = common::RemoveTree(tmp); !s.ok()) return s;
  if (mkdir(tmp.c_str(), 0755) != 0) return absl::InternalError("mkdir " + tmp);
  for (const pb::CheckpointFile& f : manifest.files()) {
    const std::string from = absl::StrCat(src, "/", f.name());
    const std::string to = absl::StrCat(tmp, "/", f.name());
    // SST files are never modified: share them. The rest (MANIFEST, WAL,
    // OPTIONS, CURRENT) RocksDB appends to or rewrites: copy them.
    if (absl::EndsWith(f.name(), ".sst") || absl::EndsWith(f.name(), ".blob")) {
      if (link(from.c_str(), to.c_str()) != 0) {
        return absl::InternalError(absl::StrCat("link ", from, " to ", to));
      }
    } else if (absl::Status s = common::CopyFileDurably(from, to); !s.ok()) {
      return s;
    }
  }
  Step("restore:copied");
  if (absl::Status s = common::SyncPath(tmp); !s.ok()) return s;
  if (rename(tmp.c_str(), Path(name).c_str()) != 0) {
    return absl::InternalError(absl::StrCat("rename ", tmp));
  }
  Step("restore:renamed");
  if (absl::Status s = common::SyncPath(options_.dir); !s.ok()) return s;
  const std::string old = live_;
  if (absl::Status s = OpenLive(name); !s.ok()) return s;  // closes the old one
  // A new identity, durable before the switch: this state will diverge from
  // the checkpoint's source, and a peer reuses files of an earlier checkpoint
  // of the same identity, so two states must never share one.
  id_ = RandomId();
  PutMeta(kIdKey, std::string_view(reinterpret_cast<const char*>(&id_), sizeof(id_)));
  Commit();
  if (rocksdb::Status s = db_->SyncWAL(); !s.ok()) Fail("sync " + name, s.ToString());
  Step("restore:opened");
  // From here a crash restarts on the new state.
  if (absl::Status s = common::WriteFileDurably(Path(kCurrentFile), name); !s.ok()) {
    Fail("switch to " + name, s.ToString());
  }
  Step("restore:switched");
  (void)common::RemoveTree(Path(old));
  return absl::OkStatus();
}

void DiskState::DropCheckpointsBefore(uint64_t index) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(snapshots_dir(), ec)) {
    const std::string name = entry.path().filename().string();
    std::optional<uint64_t> at = CheckpointIndex(name);
    if (!at) continue;
    const bool partial = absl::EndsWith(name, kPartial);
    if (*at < index || (partial && *at <= index)) (void)common::RemoveTree(entry.path().string());
  }
}

uint64_t DiskState::ApproximateBytes() const {
  uint64_t total = 0;
  uint64_t v = 0;
  if (db_->GetIntProperty("rocksdb.estimate-live-data-size", &v)) total += v;
  if (db_->GetIntProperty("rocksdb.cur-size-all-mem-tables", &v)) total += v;
  return total;
}

uint64_t DiskState::ApproximateKeys() const {
  uint64_t v = 0;
  db_->GetIntProperty("rocksdb.estimate-num-keys", &v);
  return v;
}

}  // namespace ds::rsm
