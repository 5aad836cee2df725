// test-health-server: serves only the gRPC health service, exits 0 on SIGTERM
// after a graceful shutdown. Exercises common/ the way every daemon uses it.
#include <cstdio>

#include "absl/flags/flag.h"
#include "common/grpc_server.h"
#include "common/init.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0", "HOST:PORT to serve on.");
ABSL_FLAG(absl::Duration, shutdown_deadline, absl::Seconds(5),
          "How long in-flight calls may run after SIGTERM before they are cancelled.");

int main(int argc, char** argv) {
  ds::common::BlockShutdownSignals();
  ds::common::InitProcess(argc, argv,
                          "test-health-server: a daemon with only a health service (for tests).");
  auto log = ds::common::MakeLogger("health-server");
  ds::common::GrpcServer server({.listen_address = absl::GetFlag(FLAGS_listen)});
  if (auto st = server.Start(); !st.ok()) {
    log->error("{}", st.ToString());
    return 1;
  }
  log->info("serving on {}", server.address());
  int sig = ds::common::WaitForShutdownSignal();
  log->info("signal {}: shutting down", sig);
  server.Shutdown(absl::GetFlag(FLAGS_shutdown_deadline));
  log->info("stopped");
  return 0;
}
