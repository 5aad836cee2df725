// mr-worker: pulls map and reduce tasks from mr-coordinator and runs them.
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

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
          "Local directory for this worker's intermediate files (map output, spills); not "
          "shared: other workers fetch map output over gRPC. Default: a new directory under "
          "$TMPDIR (or /tmp), removed when the worker exits.");
ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "HOST:PORT where this worker serves its map output to reducers on other workers "
          "(port 0 picks a free port). Use a routable address when workers run on several "
          "machines.");
ABSL_FLAG(std::string, advertise_address, "",
          "HOST:PORT other workers reach the map-output server at (HOST:0 = that host with "
          "the bound port). Default: the --listen host and the bound port.");
ABSL_FLAG(int, parallel, 1, "Number of tasks run at once.");
ABSL_FLAG(absl::Duration, coordinator_grace, absl::Seconds(10),
          "Exit once the coordinator has been unreachable for this long.");
ABSL_FLAG(int64_t, sort_memory_mb, 256,
          "Memory in MiB for a map task's output buffer (beyond it, sorted runs are spilled "
          "to the work dir and merged) and for a reduce task's fetched map output (beyond it, "
          "fetched runs go to the work dir).");
ABSL_FLAG(std::string, app_dir, "",
          "Directory of bundled apps (mr-app-NAME.so); default: ../lib next to the binary.");

int main(int argc, char** argv) {
  ds::common::BlockShutdownSignals();
  ds::common::InitProcess(argc, argv,
                          "mr-worker: runs MapReduce tasks handed out by mr-coordinator.");
  auto log = ds::common::MakeLogger("mr-worker");
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  std::string work_dir = absl::GetFlag(FLAGS_work_dir);
  bool temporary_work_dir = false;
  if (work_dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl =
        absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/mr-worker.XXXXXX");
    if (mkdtemp(tmpl.data()) == nullptr) {
      log->error("cannot create a work dir {}: {}", tmpl, strerror(errno));
      return 1;
    }
    work_dir = tmpl;
    temporary_work_dir = true;
  }
  ds::mr::WorkerOptions options{
      .coordinator = absl::GetFlag(FLAGS_coordinator),
      .listen = absl::GetFlag(FLAGS_listen),
      .advertise_address = absl::GetFlag(FLAGS_advertise_address),
      .work_dir = work_dir,
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
  // The map-output server uses the same certificate as this worker presents
  // to the coordinator (and, with --tls-ca, requires one from reducers).
  auto server_credentials = ds::common::MakeServerCredentials(ds::common::TlsFlags(), "--tls");
  if (!server_credentials.ok()) {
    log->error("{}", std::string(server_credentials.status().message()));
    return 2;
  }
  options.server_credentials = *server_credentials;
  ds::mr::Worker worker(options, log);
  if (absl::Status st = worker.Start(); !st.ok()) {
    log->error("map-output server: {}", st.ToString());
    return 1;
  }
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
  log->info("worker {} pulling tasks from {} ({} slot(s)); map output in {}, served on {}",
            options.worker_id, options.coordinator, options.parallel, work_dir, worker.address());
  systemd.Ready(absl::StrCat("pulling tasks from ", options.coordinator));
  systemd.StartWatchdog([] { return true; });
  std::string why = worker.Run();
  log->info("stopped: {}", why);
  if (temporary_work_dir) {
    std::error_code ec;
    std::filesystem::remove_all(work_dir, ec);
  }
  return 0;
}
