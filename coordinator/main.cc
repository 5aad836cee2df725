// mr-coordinator: the MapReduce job service. Queues jobs from mrrun, hands their
// tasks to whichever workers ask, re-issues tasks of silent workers, backs up
// stragglers, and keeps job state in RocksDB so a restart resumes every job.
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_server.h"
#include "common/init.h"
#include "common/metrics.h"
#include "common/systemd_notify.h"
#include "common/tls.h"
#include "coordinator/service.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7070", "HOST:PORT to serve on.");
ABSL_FLAG(std::string, data_dir, "", "Directory for the job database (required).");
ABSL_FLAG(absl::Duration, task_timeout, absl::Seconds(10),
          "Re-issue a task whose worker has not heart-beaten for this long.");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Seconds(1),
          "How often workers heart-beat a running task; lowered to --task_timeout/4 when "
          "above half of it.");
ABSL_FLAG(int, max_attempts, 4,
          "Failed attempts (errors or timeouts) per task before the job fails.");
ABSL_FLAG(double, backup_remaining_fraction, 0.2,
          "Back up stragglers once at most this fraction of a phase's tasks remain "
          "(negative: no backup tasks).");
ABSL_FLAG(absl::Duration, backup_min_runtime, absl::Seconds(5),
          "A task must run at least this long (and twice the median time of its phase's "
          "finished tasks) before it gets a backup copy.");
ABSL_FLAG(absl::Duration, shutdown_deadline, absl::Seconds(2),
          "How long in-flight calls may run after SIGTERM.");

int main(int argc, char** argv) {
  ds::common::BlockShutdownSignals();
  ds::common::InitProcess(argc, argv,
                          "mr-coordinator: MapReduce job service (submit jobs with mrrun, "
                          "run mr-worker processes to execute them).");
  auto log = ds::common::MakeLogger("mr-coordinator");
  std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  if (data_dir.empty()) {
    log->error("--data_dir is required");
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  auto store = ds::mr::JobStore::Open(data_dir + "/jobs");
  if (!store.ok()) {
    log->error("{}", store.status().ToString());
    return 1;
  }
  ds::mr::CoordinatorOptions options;
  options.scheduler.task_timeout = absl::GetFlag(FLAGS_task_timeout);
  options.scheduler.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
  options.scheduler.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  options.scheduler.backup_remaining_fraction = absl::GetFlag(FLAGS_backup_remaining_fraction);
  options.scheduler.backup_min_runtime = absl::GetFlag(FLAGS_backup_min_runtime);
  if (options.scheduler.heartbeat_interval * 2 > options.scheduler.task_timeout) {
    options.scheduler.heartbeat_interval = options.scheduler.task_timeout / 4;
  }
  auto service = ds::mr::CoordinatorService::Create(options, std::move(*store), log);
  if (!service.ok()) {
    log->error("{}", service.status().ToString());
    return 1;
  }
  auto credentials = ds::common::MakeServerCredentials(ds::common::TlsFlags(), "--tls");
  if (!credentials.ok()) {
    log->error("{}", std::string(credentials.status().message()));
    return 2;
  }
  ds::common::GrpcServer server(
      {.listen_address = absl::GetFlag(FLAGS_listen), .credentials = *credentials});
  server.AddService(static_cast<ds::mr::pb::JobService::Service*>(service->get()));
  server.AddService(static_cast<ds::mr::pb::WorkerService::Service*>(service->get()));
  if (auto st = server.Start(); !st.ok()) {
    log->error("{}", st.ToString());
    return 1;
  }
  log->info("serving on {}, data in {}", server.address(), data_dir);
  std::unique_ptr<ds::common::MetricsServer> metrics;
  auto metrics_gauges = std::make_shared<ds::common::ScrapeCollectable>(
      [s = service->get()](ds::common::ScrapeWriter& w) { s->WriteMetrics(w); });
  if (const std::string listen = ds::common::MetricsListenFlag(); !listen.empty()) {
    auto m = ds::common::MetricsServer::Start(listen);
    if (!m.ok()) {
      log->error("--metrics-listen: {}", m.status().ToString());
      server.Shutdown(absl::ZeroDuration());
      return 1;
    }
    metrics = std::move(*m);
    metrics->Register(metrics_gauges);
    log->info("metrics on http://{}/metrics", metrics->address());
  }
  // systemd (Type=notify): READY once the job database is restored and the
  // port is open; the watchdog is fed while the process runs.
  ds::common::SystemdNotifier systemd(log);
  systemd.Ready(absl::StrCat("serving on ", server.address()));
  systemd.StartWatchdog([] { return true; });
  int sig = ds::common::WaitForShutdownSignal();
  log->info("signal {}: shutting down", sig);
  systemd.Stopping("shutting down");
  server.Shutdown(absl::GetFlag(FLAGS_shutdown_deadline));
  metrics.reset();  // its scrapes read the service
  service->reset();
  log->info("stopped");
  return 0;
}
