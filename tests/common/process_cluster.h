// A replica group of real daemon processes (kvraft-server, shardctrler-server,
// shardkv-server: anything built on raft/service/replica_server.h) on loopback
// for multi-process tests: reserved ports, one data directory per replica
// under a temporary directory (removed at the end), kill -9 / SIGSTOP /
// SIGCONT / restart, and the leader as the replicas report it.
#pragma once

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "common/net.h"
#include "common/subprocess.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/rsm.grpc.pb.h"

namespace ds::testing {

class ProcessCluster {
 public:
  // Starts `n` replicas of `binary` (a name under $DSTACK_BIN_DIR) with ids
  // 1..n; `extra_flags` go to every replica.
  ProcessCluster(std::string binary, int n, std::vector<std::string> extra_flags = {})
      : binary_(std::move(binary)), extra_flags_(std::move(extra_flags)) {
    std::string tmpl = absl::StrCat(::testing::TempDir(), "/", binary_, ".XXXXXX");
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    dir_ = tmpl;
    std::vector<std::string> peers;
    for (int i = 0; i < n; ++i) {
      auto port = common::ReserveFreePort();
      if (!port.ok()) std::abort();
      peers.push_back(absl::StrCat(i + 1, "=", port->address()));
      endpoints_.push_back(port->address());
      ports_.push_back(std::move(*port));
    }
    peers_flag_ = absl::StrJoin(peers, ",");
    procs_.resize(n);
    for (int i = 0; i < n; ++i) Start(i);
  }

  ~ProcessCluster() {
    for (auto& p : procs_) p.reset();  // kill -9 and reap
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  int size() const { return static_cast<int>(procs_.size()); }
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  std::string endpoints_flag() const { return absl::StrJoin(endpoints_, ","); }
  const std::string& peers_flag() const { return peers_flag_; }
  const std::string& dir() const { return dir_; }
  std::string data_dir(int i) const { return absl::StrCat(dir_, "/", i + 1); }
  std::string log_path(int i) const { return absl::StrCat(dir_, "/", i + 1, ".log"); }
  // The last `bytes` of replica i's log (for failure messages).
  std::string LogTail(int i, size_t bytes = 3000) const {
    std::string s = common::ReadWholeFile(log_path(i)).value_or("");
    return s.size() > bytes ? s.substr(s.size() - bytes) : s;
  }

  // (Re)starts replica i with the group's flags plus `more_flags`.
  void Start(int i, std::vector<std::string> more_flags = {}) {
    std::vector<std::string> argv = {common::BinaryPath(binary_), absl::StrCat("--id=", i + 1),
                                     "--peers=" + peers_flag_, "--data-dir=" + data_dir(i)};
    argv.insert(argv.end(), extra_flags_.begin(), extra_flags_.end());
    argv.insert(argv.end(), more_flags.begin(), more_flags.end());
    auto p = common::Subprocess::Start({.argv = argv, .log_path = log_path(i)});
    if (!p.ok()) std::abort();
    procs_[i] = std::move(*p);
  }
  bool running(int i) { return procs_[i] != nullptr && procs_[i]->running(); }
  absl::Status WaitHealthy(int i, absl::Duration timeout = absl::Seconds(30)) {
    return procs_[i]->WaitHealthy(endpoints_[i], timeout);
  }
  absl::Status WaitAllHealthy() {
    for (int i = 0; i < size(); ++i) {
      if (absl::Status st = WaitHealthy(i); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  int Kill(int i) { return procs_[i]->Kill(); }
  void Restart(int i) {
    procs_[i]->Kill();
    Start(i);
  }
  void Pause(int i) { procs_[i]->Stop(); }
  void Resume(int i) { procs_[i]->Continue(); }
  int Terminate(int i) { return procs_[i]->Terminate(absl::Seconds(10)); }
  common::Subprocess* process(int i) { return procs_[i].get(); }

  // Replica i's own status (Replica.Status), without retries.
  absl::StatusOr<rsm::pb::StatusResponse> Status(int i, absl::Duration timeout = absl::Seconds(1)) {
    auto stub = rsm::pb::Replica::NewStub(
        grpc::CreateChannel(endpoints_[i], grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    rsm::pb::StatusResponse resp;
    grpc::Status st = stub->Status(&ctx, rsm::pb::StatusRequest(), &resp);
    if (!st.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
    }
    return resp;
  }

  // The replica that says it is the leader (the highest term wins), or -1.
  int Leader() {
    int leader = -1;
    uint64_t term = 0;
    for (int i = 0; i < size(); ++i) {
      if (!running(i)) continue;
      auto st = Status(i);
      if (st.ok() && st->role() == rsm::pb::ROLE_LEADER && st->term() >= term) {
        leader = i;
        term = st->term();
      }
    }
    return leader;
  }

  // Waits up to `limit` for a leader; -1 if none.
  int WaitForLeader(absl::Duration limit = absl::Seconds(20)) {
    const absl::Time deadline = absl::Now() + limit;
    while (absl::Now() < deadline) {
      if (int leader = Leader(); leader >= 0) return leader;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return -1;
  }

 private:
  const std::string binary_;
  const std::vector<std::string> extra_flags_;
  std::string dir_;
  std::string peers_flag_;
  std::vector<std::string> endpoints_;
  std::vector<common::PortReservation> ports_;
  std::vector<std::unique_ptr<common::Subprocess>> procs_;
};

}  // namespace ds::testing
