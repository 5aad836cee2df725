// mr-coordinator's gRPC services around the pure Scheduler: one mutex guards the
// scheduler; every change is persisted (group commit, outside the mutex) before
// the RPC that caused it is answered; a ticker thread expires silent attempts.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics.h"
#include "coordinator/job_store.h"
#include "coordinator/scheduler.h"
#include "proto/mapreduce.grpc.pb.h"
#include "spdlog/logger.h"

namespace ds::mr {

struct CoordinatorOptions {
  SchedulerOptions scheduler;
  // How often silent attempts are looked for. Default: 100 ms.
  absl::Duration tick_interval = absl::Milliseconds(100);
};

class CoordinatorService final : public pb::JobService::Service, public pb::WorkerService::Service {
 public:
  // Restores the jobs found in `store` and starts the ticker.
  static absl::StatusOr<std::unique_ptr<CoordinatorService>> Create(
      CoordinatorOptions options, std::unique_ptr<JobStore> store,
      std::shared_ptr<spdlog::logger> log);
  ~CoordinatorService() override;  // stops the ticker

  grpc::Status Submit(grpc::ServerContext*, const pb::SubmitRequest*, pb::SubmitResponse*) override;
  grpc::Status Status(grpc::ServerContext*, const pb::StatusRequest*, pb::StatusResponse*) override;
  grpc::Status List(grpc::ServerContext*, const pb::ListRequest*, pb::ListResponse*) override;
  grpc::Status Cancel(grpc::ServerContext*, const pb::CancelRequest*, pb::CancelResponse*) override;
  grpc::Status RequestTask(grpc::ServerContext*, const pb::RequestTaskRequest*,
                           pb::RequestTaskResponse*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const pb::HeartbeatRequest*,
                         pb::HeartbeatResponse*) override;
  grpc::Status ReportTask(grpc::ServerContext*, const pb::ReportTaskRequest*,
                          pb::ReportTaskResponse*) override;
  grpc::Status RegisterWorker(grpc::ServerContext*, const pb::RegisterWorkerRequest*,
                              pb::RegisterWorkerResponse*) override;
  grpc::Status ListWorkers(grpc::ServerContext*, const pb::ListWorkersRequest*,
                           pb::ListWorkersResponse*) override;

  // Jobs and tasks by state, attempts, for /metrics (a ScrapeCollectable's
  // callback). Holds the mutex only to count (never held across a write).
  void WriteMetrics(common::ScrapeWriter& w) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  CoordinatorService(CoordinatorOptions options, std::unique_ptr<JobStore> store,
                     std::shared_ptr<spdlog::logger> log);
  // Queues the scheduler's dirty records; returns the sequence number that must
  // become durable before the caller answers.
  uint64_t StageLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits until everything staged up to `seq` is on disk, writing it if no
  // other thread is (the mutex is released during the write).
  absl::Status WaitDurable(uint64_t seq) ABSL_LOCKS_EXCLUDED(mu_);
  void TickLoop();
  // Notes the intermediate directories of jobs among `records` that ended,
  // to be removed once staged batch `seq` is durable.
  void NoteEndedLocked(const std::vector<pb::JobRecord>& records, uint64_t seq)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes the intermediate directories of jobs whose end is durable (outside
  // the mutex: it is file-system work).
  void CleanUp() ABSL_LOCKS_EXCLUDED(mu_);

  const CoordinatorOptions options_;
  const std::unique_ptr<JobStore> store_;
  const std::shared_ptr<spdlog::logger> log_;

  absl::Mutex mu_;
  Scheduler scheduler_ ABSL_GUARDED_BY(mu_);
  // Latest serialized-to-be record per job id, not yet written.
  std::map<std::string, pb::JobRecord> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t staged_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t durable_seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status store_error_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Leftovers of ended jobs, waiting for CleanUp().
  struct Garbage {
    uint64_t seq;                  // the staged batch holding the job's end
    std::string intermediate_dir;  // removed with its contents
    std::string output_dir;        // "": none; else its tmp-* files are removed
  };
  std::vector<Garbage> garbage_ ABSL_GUARDED_BY(mu_);
  std::thread ticker_;
};

}  // namespace ds::mr
