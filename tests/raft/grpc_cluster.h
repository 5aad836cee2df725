// GrpcCluster: N Raft Nodes in one process, each with its own RocksDbStorage
// (a directory under a temp dir), GrpcTransport and gRPC server on a reserved
// 127.0.0.1 port, and a small test state machine (LogApp). Shared by the
// cluster test and raft_bench.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc_server.h"
#include "common/net.h"
#include "raft/node/node.h"
#include "raft/storage/rocksdb_storage.h"
#include "raft/transport/grpc_transport.h"

namespace ds::raft::testing_util {

// The replicated state: the concatenation of every applied command, so two
// replicas agree iff they applied the same commands in the same order. Its
// snapshot is that string, so a long run makes a multi-MiB snapshot.
class LogApp {
 public:
  // light: keep neither the state nor old terms (the benchmark: it would
  // otherwise hold every byte it ever committed).
  explicit LogApp(bool light = false) : light_(light) {}

  void Apply(ApplyBatch batch) {
    std::vector<std::function<void()>> ready;
    {
      absl::MutexLock lock(&mu_);
      if (batch.snapshot) {
        state_ = batch.snapshot->data();
        applied_ = batch.snapshot->metadata().index();
        terms_.clear();
        ++restores_;
      }
      for (const pb::Entry& e : batch.entries) {
        if (!e.data().empty() && !light_) state_ += e.data();
        applied_ = e.index();
        terms_[e.index()] = e.term();
      }
      // Light mode: terms of long-applied entries are never asked for again.
      if (light_ && terms_.size() > 100000) {
        terms_.erase(terms_.begin(), terms_.lower_bound(applied_ - 50000));
      }
      // Waiters are keyed by index, so each batch wakes only the ones it serves.
      auto end = waiters_.upper_bound(applied_);
      for (auto it = waiters_.begin(); it != end; ++it) ready.push_back(std::move(it->second));
      waiters_.erase(waiters_.begin(), end);
    }
    for (auto& fn : ready) fn();
  }

  // Calls `fn` (on the apply thread, or inline if already applied) once
  // `index` is applied; fn must not block.
  void OnApplied(uint64_t index, std::function<void()> fn) {
    {
      absl::MutexLock lock(&mu_);
      if (applied_ < index) {
        waiters_.emplace(index, std::move(fn));
        return;
      }
    }
    fn();
  }

  // The term of the entry applied at `index` (0 if it came inside a snapshot
  // or is not applied yet).
  uint64_t TermAt(uint64_t index) {
    absl::MutexLock lock(&mu_);
    auto it = terms_.find(index);
    return it == terms_.end() ? 0 : it->second;
  }

  // Waits until `index` is applied; then returns the term of the entry applied
  // there (0 if it came inside a snapshot). nullopt on timeout.
  std::optional<uint64_t> WaitApplied(uint64_t index, absl::Duration timeout) {
    auto n = std::make_shared<absl::Notification>();
    OnApplied(index, [n] { n->Notify(); });
    if (!n->WaitForNotificationWithTimeout(timeout)) return std::nullopt;
    return TermAt(index);
  }

  // (applied index, state) captured together, for Node::Snapshot.
  std::pair<uint64_t, std::string> Capture() {
    absl::MutexLock lock(&mu_);
    return {applied_, state_};
  }
  uint64_t applied() {
    absl::MutexLock lock(&mu_);
    return applied_;
  }
  int restores() {
    absl::MutexLock lock(&mu_);
    return restores_;
  }

 private:
  const bool light_;
  absl::Mutex mu_;
  std::string state_ ABSL_GUARDED_BY(mu_);
  uint64_t applied_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, uint64_t> terms_ ABSL_GUARDED_BY(mu_);
  int restores_ ABSL_GUARDED_BY(mu_) = 0;
  std::multimap<uint64_t, std::function<void()>> waiters_ ABSL_GUARDED_BY(mu_);
};

struct GrpcClusterOptions {
  int size = 3;
  absl::Duration tick_interval = absl::Milliseconds(20);
  int election_ticks = 10;
  uint64_t snapshot_chunk_bytes = 1ull << 20;
  // LogApp(light) on every node (see LogApp).
  bool light_apps = false;
  // NodeOptions::log_retention of every node.
  LogRetention log_retention;
};

class GrpcCluster {
 public:
  // `dir` must exist and outlive the cluster; node i stores its log in dir/i.
  static absl::StatusOr<std::unique_ptr<GrpcCluster>> Create(std::string dir,
                                                             GrpcClusterOptions options) {
    auto c = std::unique_ptr<GrpcCluster>(new GrpcCluster(std::move(dir), options));
    for (int i = 1; i <= options.size; ++i) {
      auto port = common::ReserveFreePort();
      if (!port.ok()) return port.status();
      c->peers_[i] = port->address();
      c->replicas_[i].port = std::move(*port);
    }
    for (int i = 1; i <= options.size; ++i) {
      if (absl::Status s = c->StartNode(i); !s.ok()) return s;
    }
    return c;
  }

  ~GrpcCluster() {
    for (auto& [id, r] : replicas_) StopNode(id);
  }

  // A new node outside the configuration (a member to be added, started as
  // with --initial-cluster-state=existing): it knows the others' addresses,
  // they learn its own from the configuration once it is added.
  absl::Status AddNode(uint64_t id) {
    auto port = common::ReserveFreePort();
    if (!port.ok()) return port.status();
    peers_[id] = port->address();
    replicas_[id].port = std::move(*port);
    joiners_.insert(id);
    return StartNode(id);
  }
  std::string address(uint64_t id) { return peers_[id]; }

  // Proposes a membership change at the leader until it is committed and
  // applied there; retries while the leader refuses with kUnavailable.
  absl::Status ChangeMembership(pb::ConfChangeType type, uint64_t id, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    absl::Status last = absl::DeadlineExceededError("no leader");
    while (absl::Now() < deadline) {
      const uint64_t leader = WaitForLeader(deadline - absl::Now());
      if (leader == 0) break;
      pb::ConfChange cc;
      cc.set_type(type);
      cc.set_node_id(id);
      cc.set_address(peers_[id]);
      auto done = std::make_shared<absl::Notification>();
      auto result = std::make_shared<absl::StatusOr<Proposal>>();
      node(leader)->ProposeConfChangeAsync(cc, [done, result](absl::StatusOr<Proposal> p) {
        *result = std::move(p);
        done->Notify();
      });
      done->WaitForNotification();
      if (!result->ok()) {
        last = result->status();
        if (last.code() != absl::StatusCode::kUnavailable) return last;
        absl::SleepFor(absl::Milliseconds(20));
        continue;
      }
      std::optional<uint64_t> term =
          app(leader)->WaitApplied((*result)->index, deadline - absl::Now());
      if (term && *term == (*result)->term) return absl::OkStatus();
      last = absl::AbortedError("the change was lost to a leader change");
    }
    return last;
  }

  // (Re)starts node `id` on its port and directory with a fresh LogApp.
  absl::Status StartNode(uint64_t id) {
    Replica& r = replicas_[id];
    auto storage = RocksDbStorage::Open(absl::StrCat(dir_, "/", id));
    if (!storage.ok()) return storage.status();
    r.storage = storage->get();
    GrpcTransportOptions topt;
    topt.id = id;
    topt.peers = peers_;
    topt.snapshot_chunk_bytes = options_.snapshot_chunk_bytes;
    auto transport = std::make_unique<GrpcTransport>(topt);
    r.transport = transport.get();
    common::GrpcServerOptions sopt;
    sopt.listen_address = peers_[id];
    r.server = std::make_unique<common::GrpcServer>(sopt);
    r.server->AddService(transport->service());
    if (absl::Status s = r.server->Start(); !s.ok()) return s;
    r.app = std::make_unique<LogApp>(options_.light_apps);
    NodeOptions nopt;
    nopt.id = id;
    nopt.tick_interval = options_.tick_interval;
    nopt.raft.election_ticks = options_.election_ticks;
    nopt.raft.heartbeat_ticks = 1;
    nopt.raft.seed = id * 7919;
    nopt.log_retention = options_.log_retention;
    for (const auto& [pid, addr] : peers_) {
      if (joiners_.count(pid)) continue;
      nopt.raft.peers.push_back(pid);
      nopt.raft.peer_addresses[pid] = addr;
    }
    if (joiners_.count(id)) nopt.raft.peers.clear();
    LogApp* app = r.app.get();
    auto node = Node::Start(nopt, std::move(*storage), std::move(transport),
                            [app](ApplyBatch b) { app->Apply(std::move(b)); });
    if (!node.ok()) return node.status();
    r.node = std::move(*node);
    return absl::OkStatus();
  }

  // Stops node `id` as a crash would look to its peers: its server stops
  // answering and its Raft thread stops. Its directory stays.
  void StopNode(uint64_t id) {
    Replica& r = replicas_[id];
    if (r.server) r.server->Shutdown(absl::ZeroDuration());
    if (r.node) r.node->Stop();
    r.node.reset();  // closes the storage, the transport
    r.server.reset();
    r.storage = nullptr;
    r.transport = nullptr;
  }

  bool running(uint64_t id) { return replicas_[id].node != nullptr; }
  Node* node(uint64_t id) { return replicas_[id].node.get(); }
  LogApp* app(uint64_t id) { return replicas_[id].app.get(); }
  RocksDbStorage* storage(uint64_t id) { return replicas_[id].storage; }
  GrpcTransport* transport(uint64_t id) { return replicas_[id].transport; }
  std::vector<uint64_t> ids() const {
    std::vector<uint64_t> out;
    for (const auto& [id, addr] : peers_) out.push_back(id);
    return out;
  }

  // A running node that is leader and that every other running node that
  // knows a leader agrees on; 0 if none within `timeout`.
  uint64_t WaitForLeader(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      for (uint64_t id : ids()) {
        if (!running(id) || node(id)->GetStatus().role != Role::kLeader) continue;
        return id;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return 0;
  }

  // Proposes `data` at the current leader until it is committed and applied
  // there (retrying after leader changes); the committed position.
  absl::StatusOr<Proposal> ProposeCommitted(const std::string& data, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      const uint64_t leader = WaitForLeader(deadline - absl::Now());
      if (leader == 0) break;
      absl::StatusOr<Proposal> p = node(leader)->Propose(data);
      if (!p.ok()) {  // lost leadership in between
        absl::SleepFor(absl::Milliseconds(5));
        continue;
      }
      std::optional<uint64_t> term = app(leader)->WaitApplied(p->index, deadline - absl::Now());
      if (term && *term == p->term) return *p;
      // Another entry won that index (a leader change): propose again.
    }
    return absl::DeadlineExceededError("no commit before the deadline: " + data.substr(0, 32));
  }

 private:
  struct Replica {
    common::PortReservation port;
    std::unique_ptr<common::GrpcServer> server;
    std::unique_ptr<LogApp> app;
    std::unique_ptr<Node> node;
    RocksDbStorage* storage = nullptr;   // owned by node
    GrpcTransport* transport = nullptr;  // owned by node
  };

  GrpcCluster(std::string dir, GrpcClusterOptions options)
      : dir_(std::move(dir)), options_(options) {}

  const std::string dir_;
  const GrpcClusterOptions options_;
  std::map<uint64_t, std::string> peers_;
  std::map<uint64_t, Replica> replicas_;
  std::set<uint64_t> joiners_;  // added with AddNode: no bootstrap configuration
};

}  // namespace ds::raft::testing_util
