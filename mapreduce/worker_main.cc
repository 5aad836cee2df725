// mr-worker: pulls map and reduce tasks from mr-coordinator and runs them.
#include <unistd.h>

#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_server.h"
#include "common/init.h"
#include "common/metrics.h"
#include "common/systemd_notify.h"
#include "common/tls.h"
#include "mapreduce/worker.h"
#include "prometheus/registry.h"

ABSL_FLAG(std::string, coordinator, "127.0.0.1:7070", "HOST:PORT of mr-coordinator.");
ABSL_FLAG(std::string, work_dir, "",
          "Directory for intermediate files (default: <job output dir>/.mr-intermediate). "
          "Reduce tasks on other workers must be able to read it.");
ABSL_FLAG(int, parallel, 1, "Number of tasks run at once.");
ABSL_FLAG(absl::Duration, coordinator_grace, absl::Seconds(10),
          "Exit once the coordinator has been unreachable for this long.");
ABSL_FLAG(int64_t, sort_memory_mb, 256,
          "Reduce sort memory budget in MiB; larger partitions spill sorted runs to disk.");
ABSL_FLAG(std::string, app_dir, "",
          "Directory of bundled apps (mr-app-NAME.so); default: ../lib next to the binary.");

int main(int argc, char** argv) {
  ds::common::BlockShutdownSignals();
  ds::common::InitProcess(argc, argv,
                          "mr-worker: runs MapReduce tasks handed out by mr-coordinator.");
  auto log = ds::common::MakeLogger("mr-worker");
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  ds::mr::WorkerOptions options{
      .coordinator = absl::GetFlag(FLAGS_coordinator),
      .work_dir = absl::GetFlag(FLAGS_work_dir),
      .parallel = absl::GetFlag(FLAGS_parallel),
      .coordinator_grace = absl::GetFlag(FLAGS_coordinator_grace),
      .sort_memory_bytes = static_cast<uint64_t>(absl::GetFlag(FLAGS_sort_memory_mb)) << 20,
      .app_dir = absl::GetFlag(FLAGS_app_dir),
      .worker_id = absl::StrCat(host, ":", getpid()),
  };
  // The registry the Worker counts into; it outlives the Worker and the
  // endpoint, which serves it until the end of main.
  auto metrics_registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<ds::common::MetricsServer> metrics;
  if (const std::string listen = ds::common::MetricsListenFlag(); !listen.empty()) {
    auto m = ds::common::MetricsServer::Start(listen);
    if (!m.ok()) {
      log->error("--metrics-listen: {}", m.status().ToString());
      return 1;
    }
    metrics = std::move(*m);
    options.metrics = metrics_registry.get();
  }
  auto credentials = ds::common::ClientCredentialsFromFlags();
  if (!credentials.ok()) {
    log->error("{}", std::string(credentials.status().message()));
    return 2;
  }
  options.credentials = *credentials;
  ds::mr::Worker worker(options, log);
  if (metrics) {
    metrics->Register(metrics_registry);
    log->info("metrics on http://{}/metrics", metrics->address());
  }
  // The signal waiter outlives Run() when the coordinator goes away first;
  // detached, it ends with the process.
  ds::common::SystemdNotifier systemd(log);
  std::thread([&worker, &systemd, log] {
    int sig = ds::common::WaitForShutdownSignal();
    log->info("signal {}: finishing the current task, then exiting", sig);
    systemd.Stopping("finishing the current task");
    worker.RequestStop();
  }).detach();
  log->info("worker {} pulling tasks from {} ({} slot(s))", options.worker_id, options.coordinator,
            options.parallel);
  systemd.Ready(absl::StrCat("pulling tasks from ", options.coordinator));
  systemd.StartWatchdog([] { return true; });
  std::string why = worker.Run();
  log->info("stopped: {}", why);
  return 0;
}
