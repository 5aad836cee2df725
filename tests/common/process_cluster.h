// A replica group of real daemon processes (kvraft-server, shardctrler-server,
// shardkv-server: anything built on raft/service/replica_server.h) on loopback
// for multi-process tests: reserved ports, one data directory per replica
// under a temporary directory (removed at the end), kill -9 / SIGSTOP /
// SIGCONT / restart, and the leader as the replicas report it. For
// membership tests, replicas beyond the first `n` can be added (a reserved
// port, started later with flags of their own) and a data directory wiped.
// ShardedProcessCluster: a shard controller and shardkv groups side by side.
#pragma once

#include <stdlib.h>

#include <cstdint>
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
    StartAs(i, i + 1, peers_flag_, std::move(more_flags));
  }
  // (Re)starts replica i (its port, data directory and log) as replica `id`
  // with --peers=`peers` and the group's flags plus `more_flags`: a new
  // member joining with --initial-cluster-state=existing, or a replica
  // started under the wrong id.
  void StartAs(int i, uint64_t id, const std::string& peers,
               std::vector<std::string> more_flags = {}) {
    std::vector<std::string> argv = {common::BinaryPath(binary_), absl::StrCat("--id=", id),
                                     "--peers=" + peers, "--data-dir=" + data_dir(i)};
    argv.insert(argv.end(), extra_flags_.begin(), extra_flags_.end());
    argv.insert(argv.end(), more_flags.begin(), more_flags.end());
    procs_[i].reset();  // kill -9 and reap one still running
    auto p = common::Subprocess::Start({.argv = argv, .log_path = log_path(i)});
    if (!p.ok()) std::abort();
    procs_[i] = std::move(*p);
  }
  // Adds replica size() (id size() + 1) on a newly reserved port, without
  // starting it, and returns its index: a member-to-be. Its address is in
  // endpoints() from now on, so clients made afterwards know it.
  int Add() {
    auto port = common::ReserveFreePort();
    if (!port.ok()) std::abort();
    endpoints_.push_back(port->address());
    ports_.push_back(std::move(*port));
    procs_.emplace_back();
    return size() - 1;
  }
  // "ID=HOST:PORT" of replica i: its entry in --peers (its Raft address,
  // which is also its client address here).
  std::string peer(int i) const { return absl::StrCat(i + 1, "=", endpoints_[i]); }
  // Deletes replica i's data directory, as when its disk is lost. The replica
  // must not be running.
  void WipeDataDir(int i) {
    std::error_code ec;
    std::filesystem::remove_all(data_dir(i), ec);
  }
  bool running(int i) { return procs_[i] != nullptr && procs_[i]->running(); }
  absl::Status WaitHealthy(int i, absl::Duration timeout = absl::Seconds(30)) {
    if (procs_[i] == nullptr) return absl::FailedPreconditionError("never started");
    return procs_[i]->WaitHealthy(endpoints_[i], timeout);
  }
  // Every replica started so far (added ones not yet started are skipped).
  absl::Status WaitAllHealthy() {
    for (int i = 0; i < size(); ++i) {
      if (procs_[i] == nullptr) continue;
      if (absl::Status st = WaitHealthy(i); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  int Kill(int i) { return procs_[i] == nullptr ? -1 : procs_[i]->Kill(); }
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

// Raft timing for tests (elections within about a second), warnings only.
inline std::vector<std::string> FastRaftFlags() {
  return {"--tick-interval=50ms", "--election-ticks=10", "--log-level=warn"};
}

// Clerk::Create(options) (CtrlClerk, ShardKvClerk, ...), which must succeed:
// the test fails and aborts otherwise.
template <typename Clerk, typename Options>
std::unique_ptr<Clerk> MustCreate(Options options) {
  auto c = Clerk::Create(std::move(options));
  if (!c.ok()) {
    ADD_FAILURE() << "Create: " << c.status();
    std::abort();
  }
  return std::move(*c);
}

// Several replica groups side by side, as the sharded KV service runs: a
// shard controller (a ProcessCluster of shardctrler-server) and replica
// groups of shardkv-server, each a ProcessCluster of its own started with
// --gid=G and --controllers naming the controller's replicas. No group is
// joined: that is the test's move (kvctl ctrl join JoinArg(G) ...).
class ShardedProcessCluster {
 public:
  struct Options {
    int controller_replicas = 3;
    std::vector<uint64_t> gids = {1, 2, 3};  // one group each, in this order
    int group_replicas = 3;
    std::vector<std::string> controller_flags;  // to every controller replica
    std::vector<std::string> group_flags;       // to every replica of every group

    // Groups `gids`, FastRaftFlags() everywhere; the groups' leaders look for
    // new configurations, shards to pull and shards to release every 50 ms.
    static Options Fast(std::vector<uint64_t> gids) {
      Options o;
      o.gids = std::move(gids);
      o.controller_flags = FastRaftFlags();
      o.group_flags = FastRaftFlags();
      o.group_flags.push_back("--poll-interval=50ms");
      return o;
    }
  };

  explicit ShardedProcessCluster(Options options)
      : controllers_("shardctrler-server", options.controller_replicas,
                     std::move(options.controller_flags)),
        gids_(std::move(options.gids)) {
    for (uint64_t gid : gids_) {
      std::vector<std::string> flags = {absl::StrCat("--gid=", gid),
                                        "--controllers=" + controllers_.endpoints_flag()};
      flags.insert(flags.end(), options.group_flags.begin(), options.group_flags.end());
      groups_.push_back(
          std::make_unique<ProcessCluster>("shardkv-server", options.group_replicas, flags));
    }
  }

  ProcessCluster& controllers() { return controllers_; }
  const std::vector<uint64_t>& gids() const { return gids_; }
  // The group `gid` (one of gids()).
  ProcessCluster& group(uint64_t gid) {
    for (size_t k = 0; k < gids_.size(); ++k) {
      if (gids_[k] == gid) return *groups_[k];
    }
    std::abort();
  }
  // "G=HOST:PORT,HOST:PORT,...": the argument of kvctl ctrl join for `gid`.
  std::string JoinArg(uint64_t gid) { return absl::StrCat(gid, "=", group(gid).endpoints_flag()); }

  // Every replica of the controller and of every group answers its health check.
  absl::Status WaitAllHealthy() {
    if (absl::Status st = controllers_.WaitAllHealthy(); !st.ok()) return st;
    for (auto& g : groups_) {
      if (absl::Status st = g->WaitAllHealthy(); !st.ok()) return st;
    }
    return absl::OkStatus();
  }

  // The last `bytes` of every replica's log (for failure messages).
  std::string Logs(size_t bytes = 2000) {
    std::string out;
    for (int i = 0; i < controllers_.size(); ++i) {
      absl::StrAppend(&out, "--- controller ", i + 1, ":\n", controllers_.LogTail(i, bytes), "\n");
    }
    for (size_t k = 0; k < gids_.size(); ++k) {
      for (int i = 0; i < groups_[k]->size(); ++i) {
        absl::StrAppend(&out, "--- group ", gids_[k], " replica ", i + 1, ":\n",
                        groups_[k]->LogTail(i, bytes), "\n");
      }
    }
    return out;
  }

 private:
  ProcessCluster controllers_;
  const std::vector<uint64_t> gids_;
  std::vector<std::unique_ptr<ProcessCluster>> groups_;  // in the order of gids_
};

}  // namespace ds::testing
