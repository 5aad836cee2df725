// mr-worker: pulls map and reduce tasks from mr-coordinator and runs them.
#include <unistd.h>

#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_server.h"
#include "common/init.h"
#include "mapreduce/worker.h"

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
  ds::mr::Worker worker(options, log);
  // The signal waiter outlives Run() when the coordinator goes away first;
  // detached, it ends with the process.
  std::thread([&worker, log] {
    int sig = ds::common::WaitForShutdownSignal();
    log->info("signal {}: finishing the current task, then exiting", sig);
    worker.RequestStop();
  }).detach();
  log->info("worker {} pulling tasks from {} ({} slot(s))", options.worker_id, options.coordinator,
            options.parallel);
  std::string why = worker.Run();
  log->info("stopped: {}", why);
  return 0;
}
