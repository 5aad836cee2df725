// Start a child process (a daemon under test), wait until its gRPC health check
// answers, pause, resume or kill it, and always reap it.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ds::common {

struct SubprocessOptions {
  // argv[0] is the path of the executable (no PATH search).
  std::vector<std::string> argv;
  // stdout and stderr are appended to this file; "" keeps the parent's.
  std::string log_path;
  // stdin is read from this file; "" gives /dev/null.
  std::string stdin_path;
  // Working directory of the child; "" keeps the parent's.
  std::string working_dir;
  // Extra "NAME=VALUE" entries added to the parent's environment.
  std::vector<std::string> env;
};

class Subprocess {
 public:
  // Forks and execs. The child gets SIGKILL if the parent dies (PR_SET_PDEATHSIG),
  // so a crashed test leaves no daemons behind.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(SubprocessOptions options);

  // Kills (SIGKILL) and reaps the child if it is still running.
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  const SubprocessOptions& options() const { return options_; }

  // Polls the standard gRPC health check at `address` until it reports SERVING.
  // Fails when `timeout` passes or the child exits first.
  absl::Status WaitHealthy(const std::string& address, absl::Duration timeout,
                           const std::string& service = "");

  // Sends `sig`. No effect once the child has been reaped.
  void Signal(int sig);
  void Stop() { Signal(SIGSTOP); }      // pause (SIGSTOP)
  void Continue() { Signal(SIGCONT); }  // resume (SIGCONT)
  // SIGKILL, then reap. Returns the exit status (see Wait).
  int Kill();
  // SIGTERM; if the child has not exited after `grace`, SIGKILL. Reaps it.
  int Terminate(absl::Duration grace);

  // Reaps the child if it has exited. Exit status: the exit code, or 128 + the
  // signal number if a signal killed it (as the shell reports it).
  std::optional<int> TryWait();
  // Waits up to `timeout` for the child to exit.
  std::optional<int> WaitFor(absl::Duration timeout);
  bool running() { return !TryWait().has_value(); }

 private:
  Subprocess(SubprocessOptions options, pid_t pid) : options_(std::move(options)), pid_(pid) {}

  SubprocessOptions options_;
  pid_t pid_;
  std::optional<int> exit_status_;
};

// Path of a binary built by this project: $DSTACK_BIN_DIR/NAME (ctest sets
// DSTACK_BIN_DIR), else the directory of the running executable.
std::string BinaryPath(const std::string& name);

}  // namespace ds::common
