// mr-worker's engine: `parallel` slots, each pulling a task from the
// coordinator, running it while a side thread heart-beats it, and reporting the
// result; a gRPC server giving the output of the maps it ran to reducers on
// other workers; and a registration loop telling the coordinator where that
// server is and which bundled apps this worker has. Stops when asked or when
// the coordinator has been unreachable for longer than the grace period.
#pragma once

#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/grpc_server.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "mapreduce/map_output_service.h"
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
  // TLS to the coordinator and to other workers' map-output servers
  // (common/tls.h). Null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // TLS of this worker's map-output server. Null: plaintext.
  std::shared_ptr<grpc::ServerCredentials> server_credentials;
  // Where this worker's map output server listens (port 0 picks one).
  // Default: 127.0.0.1:0 (one machine; give a routable address otherwise).
  std::string listen = "127.0.0.1:0";
  // HOST:PORT the other workers reach that server at; "" = the listen host
  // with the bound port.
  std::string advertise_address;
  // Local directory for this worker's intermediate files (map output,
  // spills, streaming temporaries). Required; not shared with other workers.
  std::string work_dir;
  // Tasks run at once. Default: 1.
  int parallel = 1;
  // Exit after the coordinator has been unreachable this long. Default: 10 s.
  absl::Duration coordinator_grace = absl::Seconds(10);
  // A map task's output buffer, and a reduce task's fetched runs, use this
  // much memory before spilling to the work dir. Default: 256 MiB.
  uint64_t sort_memory_bytes = 256ull << 20;
  // How often the worker re-registers (a restarted coordinator learns of it
  // within this time). Default: 3 s.
  absl::Duration register_interval = absl::Seconds(3);
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
  ~Worker();
  // Starts the map-output server. Call once, before Run().
  absl::Status Start();
  // The address reducers fetch this worker's map output from (after Start).
  const std::string& address() const { return address_; }
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
  void RegisterLoop();
  // Deletes this worker's files of jobs that ended.
  void ForgetEndedJobs(const pb::RequestTaskResponse& response);

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
  MapOutputService map_output_service_;
  MapOutputFetcher fetcher_;
  std::unique_ptr<common::GrpcServer> server_;
  std::string address_;
  absl::Mutex mu_;
  // Jobs whose files this worker already deleted.
  std::set<std::string> forgotten_jobs_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::string stop_reason_ ABSL_GUARDED_BY(mu_);
  absl::Time last_contact_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ds::mr
