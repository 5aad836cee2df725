#include "common/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "proto/health.grpc.pb.h"

extern char** environ;

namespace ds::common {
namespace {

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(SubprocessOptions options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("Subprocess: empty argv");
  if (access(options.argv[0].c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("Subprocess: not executable: ", options.argv[0]));
  }
  // Everything the child needs is prepared before fork(): between fork and exec
  // only async-signal-safe calls are allowed (the parent has gRPC threads).
  std::vector<char*> argv;
  for (auto& a : options.argv) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  for (const auto& e : options.env) env_strings.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  int log_fd = -1;
  if (!options.log_path.empty()) {
    log_fd = open(options.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      return absl::InternalError(
          absl::StrCat("Subprocess: open ", options.log_path, ": ", std::strerror(errno)));
    }
  }
  const char* stdin_path = options.stdin_path.empty() ? "/dev/null" : options.stdin_path.c_str();
  const char* cwd = options.working_dir.empty() ? nullptr : options.working_dir.c_str();
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    if (log_fd >= 0) close(log_fd);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // The parent died before prctl.
    // A new process group, so a terminal's Ctrl-C reaches only the test.
    setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);  // Daemons block signals themselves.
    if (log_fd >= 0) {
      dup2(log_fd, STDOUT_FILENO);
      dup2(log_fd, STDERR_FILENO);
    }
    int in = open(stdin_path, O_RDONLY);
    if (in < 0) _exit(127);
    dup2(in, STDIN_FILENO);
    if (cwd != nullptr && chdir(cwd) != 0) _exit(127);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  if (log_fd >= 0) close(log_fd);
  return std::unique_ptr<Subprocess>(new Subprocess(std::move(options), pid));
}

Subprocess::~Subprocess() {
  if (!exit_status_.has_value()) Kill();
}

void Subprocess::Signal(int sig) {
  if (!exit_status_.has_value()) kill(pid_, sig);
}

std::optional<int> Subprocess::TryWait() {
  if (exit_status_.has_value()) return exit_status_;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) exit_status_ = DecodeWaitStatus(status);
  return exit_status_;
}

std::optional<int> Subprocess::WaitFor(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (auto s = TryWait()) return s;
    if (absl::Now() >= deadline) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(5));
  }
}

int Subprocess::Kill() {
  if (exit_status_.has_value()) return *exit_status_;
  kill(pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  exit_status_ = DecodeWaitStatus(status);
  return *exit_status_;
}

int Subprocess::Terminate(absl::Duration grace) {
  Signal(SIGCONT);  // A stopped process cannot handle SIGTERM.
  Signal(SIGTERM);
  if (auto s = WaitFor(grace)) return *s;
  return Kill();
}

absl::Status Subprocess::WaitHealthy(const std::string& address, absl::Duration timeout,
                                     const std::string& service) {
  absl::Time deadline = absl::Now() + timeout;
  std::string last_error = "no answer";
  while (absl::Now() < deadline) {
    if (auto s = TryWait()) {
      return absl::FailedPreconditionError(
          absl::StrCat(options_.argv[0], " exited with status ", *s, " before it was healthy"));
    }
    // A fresh channel per attempt: a channel that failed to connect (the server
    // was not listening yet) backs off for a second or more before retrying.
    auto stub = grpc::health::v1::Health::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_wait_for_ready(true);
    ctx.set_deadline(absl::ToChronoTime(std::min(deadline, absl::Now() + absl::Milliseconds(500))));
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status st = stub->Check(&ctx, req, &resp);
    if (st.ok() && resp.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return absl::OkStatus();
    }
    last_error = st.ok() ? "not serving" : st.error_message();
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat(options_.argv[0], " not healthy at ", address,
                                                  " after ", absl::FormatDuration(timeout), ": ",
                                                  last_error));
}

std::string BinaryPath(const std::string& name) {
  const char* dir = std::getenv("DSTACK_BIN_DIR");
  if (dir != nullptr && *dir != '\0') return absl::StrCat(dir, "/", name);
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return (self.parent_path() / name).string();
}

}  // namespace ds::common
