// Durable job state for mr-coordinator: one RocksDB key per job holding its
// serialized JobRecord, plus the job counter. Every write is synced, so a job
// acknowledged to mrrun (or a task result acknowledged to a worker) survives
// kill -9.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/mapreduce.pb.h"

namespace rocksdb {
class DB;
}

namespace ds::mr {

class JobStore {
 public:
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& dir);
  ~JobStore();

  struct Contents {
    std::vector<pb::JobRecord> records;
    uint64_t next_job_number = 1;
  };
  absl::StatusOr<Contents> Load();
  // Writes the records and the counter in one synced batch.
  absl::Status Write(const std::vector<pb::JobRecord>& records, uint64_t next_job_number);

 private:
  explicit JobStore(rocksdb::DB* db);
  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace ds::mr
