// mr-worker's engine: `parallel` slots, each pulling a task from the
// coordinator, running it while a side thread heart-beats it, and reporting the
// result. Stops when asked or when the coordinator has been unreachable for
// longer than the grace period.
#pragma once

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/security/credentials.h"
#include "proto/mapreduce.grpc.pb.h"
#include "spdlog/logger.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
}  // namespace prometheus

namespace ds::mr {

struct WorkerOptions {
  // HOST:PORT of mr-coordinator.
  std::string coordinator;
  // TLS to the coordinator (common/tls.h). Null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Root for intermediate files; "" = <job output dir>/.mr-intermediate.
  std::string work_dir;
  // Tasks run at once. Default: 1.
  int parallel = 1;
  // Exit after the coordinator has been unreachable this long. Default: 10 s.
  absl::Duration coordinator_grace = absl::Seconds(10);
  // Reduce-side sort keeps this much in memory before spilling. Default: 256 MiB.
  uint64_t sort_memory_bytes = 256ull << 20;
  // Where bundled apps live; "" = <binary dir>/../lib.
  std::string app_dir;
  // Identifies this worker to the coordinator; "" = host:pid.
  std::string worker_id;
  // Where to count the tasks run (--metrics-listen); must outlive the
  // Worker. nullptr (default): not counted.
  prometheus::Registry* metrics = nullptr;
};

class Worker {
 public:
  Worker(WorkerOptions options, std::shared_ptr<spdlog::logger> log);
  // Runs until RequestStop() or the coordinator is gone. A task in progress is
  // finished (and reported) first. Returns why it stopped.
  std::string Run();
  void RequestStop();

 private:
  void Slot(int slot);
  void Execute(const pb::Task& task, int slot);
  bool Stopping();
  // Waits up to `d`; true if a stop was requested meanwhile.
  bool SleepOrStop(absl::Duration d);
  void NoteContact(bool ok);

  // The metrics of one task type (map, reduce); null pointers without a
  // registry.
  struct TaskMetrics {
    prometheus::Counter* succeeded = nullptr;
    prometheus::Counter* failed = nullptr;
    prometheus::Histogram* seconds = nullptr;
  };
  TaskMetrics map_metrics_;
  TaskMetrics reduce_metrics_;
  prometheus::Gauge* running_ = nullptr;

  const WorkerOptions options_;
  const std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<pb::WorkerService::Stub> stub_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::string stop_reason_ ABSL_GUARDED_BY(mu_);
  absl::Time last_contact_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ds::mr
