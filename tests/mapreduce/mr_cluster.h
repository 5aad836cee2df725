// A MapReduce deployment of real processes on loopback for tests: one
// mr-coordinator on a reserved port with its data under a temporary directory,
// any number of mr-worker processes (working directory = that temporary
// directory, where the 6.824 timing apps leave their marker files), and mrrun
// and mr-sequential runs. Everything is killed and removed at the end.
//
// Workers share nothing but inputs and outputs: worker i's --work-dir is
// <dir>/work-i, and when the test runs as root with unshare(1) available each
// worker runs in its own mount namespace with a tmpfs mounted on that
// directory, so what one worker writes there does not exist for any other
// process (nor for a restarted copy of itself). Otherwise (or with
// MR_TEST_ISOLATION=0) the directories are merely distinct, and the cluster
// says so on stderr.
#pragma once

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/net.h"
#include "common/subprocess.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mapreduce.grpc.pb.h"

namespace ds::mr::testing {

// The 8 texts of the 6.824 lab (MR_TEST_DATA_DIR is set by CMake), sorted.
inline std::vector<std::string> Texts() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(MR_TEST_DATA_DIR, ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind("pg-", 0) == 0 && name.size() > 4 &&
        name.compare(name.size() - 4, 4, ".txt") == 0) {
      out.push_back(e.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  if (out.size() != 8) {
    ADD_FAILURE() << "expected the 8 texts pg-*.txt of 6.824 in " << MR_TEST_DATA_DIR
                  << " (cmake -DMR_TEST_DATA_DIR=...), found " << out.size();
  }
  return out;
}

// A plugin built by this project (bundled apps and the test apps): lib/NAME.so
// next to bin/.
inline std::string LibPath(const std::string& name) {
  return (std::filesystem::path(common::BinaryPath("mr-worker")).parent_path().parent_path() /
          "lib" / (name + ".so"))
      .string();
}

inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// What test-mr.sh compares: every line of every mr-out* file in `dir`, blank
// lines dropped, sorted.
inline std::vector<std::string> SortedOutput(const std::string& dir) {
  std::vector<std::string> lines;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().filename().string().rfind("mr-out", 0) != 0) continue;
    std::vector<std::string> file_lines = absl::StrSplit(ReadAll(e.path().string()), '\n');
    for (std::string& line : file_lines) {
      if (!line.empty()) lines.push_back(std::move(line));
    }
  }
  std::sort(lines.begin(), lines.end());
  return lines;
}

// Whether workers can each get a private tmpfs work dir (root, unshare(1),
// and a trial mount that works here). Decided once per test process.
inline bool WorkerIsolationAvailable() {
  static const bool available = [] {
    const char* env = std::getenv("MR_TEST_ISOLATION");
    if ((env != nullptr && std::string(env) == "0") || geteuid() != 0 ||
        access("/usr/bin/unshare", X_OK) != 0) {
      std::cerr << "mr_cluster: workers get distinct work dirs on the shared file system, not "
                   "private mount namespaces (those need root, unshare(1) and "
                   "MR_TEST_ISOLATION unset)\n";
      return false;
    }
    std::string tmpl = ::testing::TempDir() + "/mr_isolation.XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) return false;
    auto p = common::Subprocess::Start(
        {.argv = {"/usr/bin/unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                  "mount -t tmpfs -o size=1m mr-probe \"$1\" && touch \"$1\"/probe", "sh", tmpl},
         .log_path = tmpl + ".log"});
    bool ok = p.ok() && (*p)->WaitFor(absl::Seconds(20)) == std::optional<int>(0) &&
              !std::filesystem::exists(tmpl + "/probe");
    std::error_code ec;
    std::filesystem::remove_all(tmpl, ec);
    std::filesystem::remove(tmpl + ".log", ec);
    if (!ok) {
      std::cerr << "mr_cluster: no private mount namespaces here (need root and unshare): "
                   "workers get distinct work dirs on the shared file system instead\n";
    }
    return ok;
  }();
  return available;
}

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

class MrCluster {
 public:
  struct Options {
    std::vector<std::string> coordinator_flags;
    std::vector<std::string> worker_flags;
    // "NAME=VALUE" for the workers' environment.
    std::vector<std::string> worker_env;
    // true: workers get distinct work dirs on the shared file system even
    // where each could have its own mount namespace and tmpfs (see
    // WorkerIsolationAvailable). No initializer (a nested struct's default
    // member initializer cannot serve MrCluster's default argument): Options()
    // and designated initializers make it false.
    bool no_isolation;
  };

  explicit MrCluster(Options options = Options()) : options_(std::move(options)) {
    std::string tmpl = ::testing::TempDir() + "/mr_cluster.XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    dir_ = std::filesystem::path(tmpl).lexically_normal().string();
    auto port = common::ReserveFreePort();
    if (!port.ok()) std::abort();
    port_ = std::move(*port);
    isolated_ = !options_.no_isolation && WorkerIsolationAvailable();
    StartCoordinator();
  }

  // Whether workers really run with private work dirs (else: distinct ones).
  bool isolated() const { return isolated_; }
  // Worker i's --work-dir (private to it when isolated()).
  std::string WorkDir(int i) const { return Path(absl::StrCat("work-", i)); }

  ~MrCluster() {
    if (::testing::Test::HasFailure()) DumpLogs();
    coordinator_.reset();
    workers_.clear();  // kill -9 and reap
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  const std::string& dir() const { return dir_; }
  std::string address() const { return port_.address(); }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  void StartCoordinator() {
    std::vector<std::string> argv = {common::BinaryPath("mr-coordinator"), "--listen=" + address(),
                                     "--data-dir=" + Path("coordinator")};
    argv.insert(argv.end(), options_.coordinator_flags.begin(), options_.coordinator_flags.end());
    auto p = common::Subprocess::Start({.argv = argv, .log_path = Path("coordinator.log")});
    if (!p.ok()) std::abort();
    coordinator_ = std::move(*p);
    absl::Status st = coordinator_->WaitHealthy(address(), absl::Seconds(30));
    ASSERT_TRUE(st.ok()) << st;
  }
  common::Subprocess& coordinator() { return *coordinator_; }

  // Starts a worker; returns its index.
  int StartWorker(const std::vector<std::string>& extra_flags = {},
                  const std::vector<std::string>& extra_env = {}) {
    int i = static_cast<int>(workers_.size());
    std::filesystem::create_directories(WorkDir(i));
    std::vector<std::string> argv;
    if (isolated_) {
      // A private mount namespace whose tmpfs on the work dir dies with the
      // worker: a kill -9 loses its map output, as a dead machine would.
      // unshare and sh exec, so the pid is the worker's.
      argv = {"/usr/bin/unshare",
              "--mount",
              "--propagation",
              "private",
              "--",
              "/bin/sh",
              "-c",
              "mount -t tmpfs -o size=512m mr-work \"$1\" && shift && exec \"$@\"",
              "sh",
              WorkDir(i)};
    }
    argv.insert(argv.end(), {common::BinaryPath("mr-worker"), "--coordinator=" + address(),
                             "--work-dir=" + WorkDir(i), "--listen=127.0.0.1:0"});
    argv.insert(argv.end(), options_.worker_flags.begin(), options_.worker_flags.end());
    argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
    std::vector<std::string> env = options_.worker_env;
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    auto p = common::Subprocess::Start({.argv = argv,
                                        .log_path = Path(absl::StrCat("worker-", i, ".log")),
                                        .working_dir = dir_,
                                        .env = env});
    if (!p.ok()) std::abort();
    workers_.push_back(std::move(*p));
    return i;
  }
  // Replaces worker `i` (dead or alive) by a fresh process.
  void RestartWorker(int i) {
    common::SubprocessOptions options = workers_[i]->options();
    auto p = common::Subprocess::Start(std::move(options));
    if (!p.ok()) std::abort();
    workers_[i] = std::move(*p);
  }
  common::Subprocess& worker(int i) { return *workers_[i]; }
  int workers() const { return static_cast<int>(workers_.size()); }

  // Starts `mrrun --coordinator=... args` without waiting.
  std::unique_ptr<common::Subprocess> StartMrrun(const std::vector<std::string>& args,
                                                 const std::string& log_name) {
    std::vector<std::string> argv = {common::BinaryPath("mrrun"), "--coordinator=" + address()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto p = common::Subprocess::Start({.argv = argv, .log_path = Path(log_name)});
    if (!p.ok()) std::abort();
    return std::move(*p);
  }

  // Runs mrrun to the end (killed after `timeout`, which fails the test).
  RunResult Mrrun(const std::vector<std::string>& args,
                  absl::Duration timeout = absl::Seconds(60)) {
    std::string log = absl::StrCat("mrrun-", mrrun_runs_++, ".log");
    auto p = StartMrrun(args, log);
    return Finish(*p, log, timeout);
  }

  // Waits for a process started by StartMrrun and collects its output.
  RunResult Finish(common::Subprocess& p, const std::string& log_name,
                   absl::Duration timeout = absl::Seconds(60)) {
    RunResult r;
    std::optional<int> code = p.WaitFor(timeout);
    if (!code) {
      ADD_FAILURE() << "mrrun did not finish within " << timeout;
      code = p.Kill();
    }
    r.exit_code = *code;
    r.output = ReadAll(Path(log_name));
    return r;
  }

  // The reference output: mr-sequential over `inputs` with `app_flags`
  // (--app=... or --mapper/--reducer), sorted like SortedOutput.
  std::vector<std::string> Expected(const std::vector<std::string>& app_flags,
                                    const std::vector<std::string>& inputs) {
    std::string out_dir = Path(absl::StrCat("correct-", sequential_runs_++));
    std::filesystem::create_directories(out_dir);
    std::vector<std::string> argv = {common::BinaryPath("mr-sequential"),
                                     "--output=" + out_dir + "/mr-out-0", "--temp-dir=" + out_dir};
    argv.insert(argv.end(), app_flags.begin(), app_flags.end());
    argv.insert(argv.end(), inputs.begin(), inputs.end());
    auto p = common::Subprocess::Start({.argv = argv, .log_path = out_dir + ".log"});
    if (!p.ok()) std::abort();
    std::optional<int> code = (*p)->WaitFor(absl::Seconds(60));
    EXPECT_EQ(code, std::optional<int>(0)) << ReadAll(out_dir + ".log");
    return SortedOutput(out_dir);
  }

  // The workers registered with the coordinator now.
  absl::StatusOr<std::vector<pb::WorkerInfo>> RegisteredWorkers() {
    if (stub_ == nullptr) {
      stub_ = pb::JobService::NewStub(
          grpc::CreateChannel(address(), grpc::InsecureChannelCredentials()));
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    pb::ListWorkersResponse response;
    grpc::Status st = stub_->ListWorkers(&ctx, pb::ListWorkersRequest(), &response);
    if (!st.ok()) return absl::UnavailableError(st.error_message());
    return std::vector<pb::WorkerInfo>(response.workers().begin(), response.workers().end());
  }

  // Waits until at least `n` workers are registered; false after `timeout`.
  bool WaitForWorkers(int n, absl::Duration timeout = absl::Seconds(30)) {
    absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      auto w = RegisteredWorkers();
      if (w.ok() && static_cast<int>(w->size()) >= n) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

  // A job's status straight from the coordinator.
  absl::StatusOr<pb::JobStatus> Status(const std::string& job_id) {
    if (stub_ == nullptr) {
      stub_ = pb::JobService::NewStub(
          grpc::CreateChannel(address(), grpc::InsecureChannelCredentials()));
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    pb::StatusRequest request;
    request.set_job_id(job_id);
    pb::StatusResponse response;
    grpc::Status st = stub_->Status(&ctx, request, &response);
    if (!st.ok()) return absl::UnavailableError(st.error_message());
    return response.job();
  }

  // Polls the job's status until `pred` holds (true) or `timeout` passes.
  template <typename Pred>
  bool WaitForJob(const std::string& job_id, Pred pred, absl::Duration timeout) {
    absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      auto st = Status(job_id);
      if (st.ok() && pred(*st)) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

  // test-mr.sh's crash loop: restarts every worker that died until the job
  // ends or `timeout` passes. Returns the job's final status (or an error on
  // timeout).
  absl::StatusOr<pb::JobStatus> KeepWorkersAliveUntilDone(const std::string& job_id,
                                                          absl::Duration timeout) {
    absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      auto st = Status(job_id);
      if (st.ok() && (st->state() == pb::SUCCEEDED || st->state() == pb::FAILED ||
                      st->state() == pb::CANCELLED)) {
        return st;
      }
      for (int i = 0; i < workers(); ++i) {
        if (!worker(i).running()) {
          ++worker_restarts_;
          RestartWorker(i);
        }
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    return absl::DeadlineExceededError("job " + job_id + " did not end in time");
  }
  int worker_restarts() const { return worker_restarts_; }

  void DumpLogs() {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
      if (e.path().extension() != ".log") continue;
      std::string text = ReadAll(e.path().string());
      if (text.size() > 4000) text = "...\n" + text.substr(text.size() - 4000);
      std::cerr << "===== " << e.path().filename().string() << " =====\n" << text << "\n";
    }
  }

 private:
  Options options_;
  bool isolated_ = false;
  std::string dir_;
  common::PortReservation port_;
  std::unique_ptr<common::Subprocess> coordinator_;
  std::vector<std::unique_ptr<common::Subprocess>> workers_;
  std::unique_ptr<pb::JobService::Stub> stub_;
  int mrrun_runs_ = 0;
  int worker_restarts_ = 0;
  int sequential_runs_ = 0;
};

// "job-3" from mrrun --detach's output.
inline std::string JobIdFrom(const RunResult& r) {
  size_t at = r.output.find("job-");
  if (at == std::string::npos) return "";
  size_t end = r.output.find_first_of(" \n:", at);
  return r.output.substr(at, end - at);
}

}  // namespace ds::mr::testing
