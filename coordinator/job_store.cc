#include "coordinator/job_store.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "coordinator/scheduler.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"

namespace ds::mr {
namespace {

constexpr char kJobPrefix[] = "job/";
constexpr char kNextJobKey[] = "meta/next_job_number";

absl::Status FromRocks(const rocksdb::Status& s, const char* what) {
  if (s.ok()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", s.ToString()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& dir) {
  rocksdb::Options options;
  options.create_if_missing = true;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, dir, &db);
  if (!s.ok()) return FromRocks(s, "open job store");
  return std::unique_ptr<JobStore>(new JobStore(db));
}

JobStore::JobStore(rocksdb::DB* db) : db_(db) {}
JobStore::~JobStore() = default;

absl::StatusOr<JobStore::Contents> JobStore::Load() {
  Contents out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(kJobPrefix); it->Valid() && it->key().starts_with(kJobPrefix); it->Next()) {
    pb::JobRecord record;
    if (!record.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError(absl::StrCat("corrupt job record ", it->key().ToString()));
    }
    out.records.push_back(std::move(record));
  }
  if (auto s = it->status(); !s.ok()) return FromRocks(s, "scan job store");
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), kNextJobKey, &value);
  if (s.ok()) {
    if (!absl::SimpleAtoi(absl::string_view(value.data(), value.size()), &out.next_job_number)) {
      return absl::DataLossError("corrupt job counter");
    }
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read job counter");
  }
  return out;
}

absl::Status JobStore::Write(const std::vector<pb::JobRecord>& records, uint64_t next_job_number) {
  rocksdb::WriteBatch batch;
  for (const pb::JobRecord& record : records) {
    // Zero-padded so keys sort in submission order.
    char key[32];
    snprintf(key, sizeof(key), "%s%020llu", kJobPrefix,
             static_cast<unsigned long long>(JobNumber(record.status().job_id())));
    batch.Put(key, record.SerializeAsString());
  }
  batch.Put(kNextJobKey, std::to_string(next_job_number));
  rocksdb::WriteOptions options;
  options.sync = true;
  return FromRocks(db_->Write(options, &batch), "write job store");
}

}  // namespace ds::mr
