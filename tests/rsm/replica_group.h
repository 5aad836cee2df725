// ReplicaGroup: N replicas of any replicated service in one process, each the
// production stack (raft::Node under raft::Rsm applying to an
// rsm::SessionStateMachine over the service's rsm::Application), connected by
// the fault-injecting network of sim_network.h. The in-process harnesses of
// the 6.824 labs (tests/kvraft/lab3_harness.h, the shard controller's) are a
// ReplicaGroup plus the service's request path and clerks.
//
//   - Crash: Stop the replica, drop every storage write that was not synced
//     (raft::MemoryStorage::SimulateCrash, a power loss), restart it from its
//     own storage with a fresh application. MemoryStorage rather than
//     RocksDbStorage because it makes "lost unsynced writes" exact and costs
//     no fsync, so dozens of replicas fit on a busy 2-core machine under ASan;
//     the RocksDB path is covered by tests/raft/crash_test.cc and the
//     multi-process tests.
//   - Clients: a ClientLink is one client's view of the network (which
//     replicas it reaches, the loss and delay of each leg of a call); its
//     calls run the service's server-side request path on a replica, with no
//     gRPC in between, and complete asynchronously (a timer thread plays the
//     legs), so the real client engine (client/replica_client.h) drives them.
//
// Timing is scaled down from 6.824 (100 ms heartbeats, ~1 s election timeout)
// by 10x: 10 ms ticks, heartbeat every tick, elections after 100-200 ms.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/replica_client.h"
#include "common/timer.h"
#include "raft/core/rng.h"
#include "raft/rsm/rsm.h"
#include "raft/rsm/session_state_machine.h"
#include "raft/service/replica_service.h"
#include "raft/storage/memory_storage.h"
#include "tests/rsm/sim_network.h"

namespace ds::rsm::testing {

struct ReplicaGroupOptions {
  // Replicas. Default: 5.
  int servers = 5;
  // Unreliable network from the start (6.824 switches it on after starting
  // the servers; the servers here start fast, so it makes no difference).
  bool unreliable = false;
  // Unreliable network only: Raft messages duplicated, per mille. Default: 0.
  uint64_t duplicate_per_mille = 0;
  // 6.824's maxraftstate: snapshot when the persisted Raft state exceeds it.
  // Unit: bytes. -1: never snapshot. Default: -1.
  int64_t maxraftstate = -1;
  // Raft timing: 10 ms ticks, heartbeat every tick, election timeout 10-20
  // ticks (100-200 ms): 6.824's timing divided by 10.
  absl::Duration tick_interval = absl::Milliseconds(10);
  int election_ticks = 10;
  int heartbeat_ticks = 1;
  SessionOptions sessions;
  // How long a request waits on a replica (ServiceOptions.request_timeout).
  absl::Duration request_timeout = absl::Seconds(5);
  // Seeds the network and the Raft cores (tests pass TestSeed()). Default: 1.
  uint64_t seed = 1;
  // Names the replicas' loggers ("kv" gives kv-1, kv-2, ...).
  std::string name = "replica";
  // Prefixes the replicas' client addresses: "g100-" gives g100-r1, g100-r2,
  // ... (shardkv's harness lists them in configurations). Default: none.
  std::string endpoint_prefix;
};

// Something that runs beside one replica incarnation and acts on its Rsm
// (shardkv's driver): made and started once the Rsm runs, stopped before the
// Rsm stops (a crash, or the group going away), so that it never acts on a
// stopped replica.
class ReplicaCompanion {
 public:
  virtual ~ReplicaCompanion() = default;
  // Stops it; returns once it no longer acts. Idempotent.
  virtual void Stop() = 0;
};

// One replica incarnation, as its request path sees it.
struct Replica {
  std::unique_ptr<Application> app;
  std::unique_ptr<SessionStateMachine> sm;  // over app
  std::unique_ptr<raft::Rsm> rsm;           // over sm
  std::unique_ptr<ReplicaContext> context;  // over rsm
  // Last: destroyed first. Null without a CompanionFactory.
  std::unique_ptr<ReplicaCompanion> companion;
};

class ReplicaGroup {
 public:
  using AppFactory = std::function<std::unique_ptr<Application>()>;
  // Makes and starts the companion of replica `i`'s incarnation `replica`
  // (whose Rsm runs); it is stopped before that incarnation's Rsm.
  using CompanionFactory =
      std::function<std::unique_ptr<ReplicaCompanion>(int i, const Replica& replica)>;

  // Starts every replica with a fresh application from `make_app`.
  ReplicaGroup(ReplicaGroupOptions options, AppFactory make_app);
  // The same, and each replica incarnation with a companion from
  // `make_companion`.
  ReplicaGroup(ReplicaGroupOptions options, AppFactory make_app, CompanionFactory make_companion);
  ~ReplicaGroup();
  ReplicaGroup(const ReplicaGroup&) = delete;
  ReplicaGroup& operator=(const ReplicaGroup&) = delete;

  int n() const { return options_.servers; }
  const ReplicaGroupOptions& options() const { return options_; }
  std::vector<int> All() const;
  Network& net() { return net_; }
  // The timer that plays the clients' call legs.
  common::Timer& timer() { return timer_; }
  // The replicas' client "addresses" ("r1", "r2", ...), index i = id i+1.
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  static uint64_t Id(int i) { return static_cast<uint64_t>(i) + 1; }

  // Crash: stop replica i (its companion first) and lose its unsynced
  // writes. Idempotent.
  void ShutdownServer(int i) ABSL_LOCKS_EXCLUDED(mu_);
  // Stops replica i's companion only (the replica keeps running), for
  // example so that a group's companions all stop while the group can still
  // commit what they are waiting for. Idempotent; nothing if it is down.
  void StopCompanion(int i) ABSL_LOCKS_EXCLUDED(mu_);
  // Restart replica i from its storage (after ShutdownServer).
  void StartServer(int i) ABSL_LOCKS_EXCLUDED(mu_);
  // Replica i, or nullptr while it is down. Holding it keeps the incarnation
  // alive (a crash stops it but never destroys it under a caller).
  std::shared_ptr<Replica> Get(int i) const ABSL_LOCKS_EXCLUDED(mu_);

  // Server partitions, by server index (0-based), like config.go's partition().
  void Partition(const std::vector<int>& p1, const std::vector<int>& p2);
  void ConnectAll() { net_.ConnectAll(); }

  // A replica that believes it is the leader in the highest term, or -1.
  int Leader() const ABSL_LOCKS_EXCLUDED(mu_);
  // config.go's make_partition(): p1 = floor(n/2)+1 servers without the
  // leader, p2 = the others including the leader.
  std::pair<std::vector<int>, std::vector<int>> MakePartition() const;

  // Persisted sizes (raft::Storage::RaftStateBytes / SnapshotBytes), the
  // largest over the replicas: 6.824's LogSize() and SnapshotSize().
  uint64_t LogSize() const;
  uint64_t SnapshotSize() const;
  // The same for replica i alone (whether it is up or down).
  uint64_t RaftStateBytes(int i) const { return storage_[i]->RaftStateBytes(); }
  uint64_t SnapshotBytes(int i) const { return storage_[i]->SnapshotBytes(); }

  uint64_t NextSeed() { return seed_counter_.fetch_add(1) * 0x9e3779b97f4a7c15ull + options_.seed; }

 private:
  const ReplicaGroupOptions options_;
  const AppFactory make_app_;
  const CompanionFactory make_companion_;
  Network net_;
  std::vector<std::string> endpoints_;
  std::atomic<uint64_t> seed_counter_{1};
  // Each replica's disk; survives ShutdownServer.
  std::vector<std::shared_ptr<raft::MemoryStorage>> storage_;
  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<Replica>> replicas_ ABSL_GUARDED_BY(mu_);
  // Last member: its thread stops first, before the replicas go.
  common::Timer timer_;
};

// One client's view of the group: which replicas it reaches, and its calls
// through the simulated network. The harnesses' client transports forward
// ReplicaTransport's endpoints, Probe and RunAt to it and add their service's
// Send on top of Call. Calls
// in flight may outlive the link (their closures share its state); the group
// must outlive both.
class ClientLink {
 public:
  ClientLink(ReplicaGroup* group, std::vector<int> servers, uint64_t seed);

  // Which replicas this client's calls can reach (config.go's ConnectClient).
  void ConnectTo(std::vector<int> servers);

  // client::ReplicaTransport's methods.
  const std::vector<std::string>& endpoints() const { return group_->endpoints(); }
  void Probe(size_t i, absl::Time deadline,
             std::function<void(absl::StatusOr<pb::StatusResponse>)> done);
  void RunAt(absl::Time when, std::function<void()> fn);

  // One call to replica i: after the request leg, `serve` runs the service's
  // request path on the replica (nullptr: the replica is down, answer
  // kUnavailable) and passes its answer to the reply callback, which plays the
  // reply leg; `done` then gets the answer. A call lost on either leg, or to a
  // replica this client cannot reach, ends with `done(std::nullopt)` after a
  // short delay (the client cannot tell the two apart). `serve` must not block.
  template <typename Answer>
  void Call(size_t i, std::function<void(const Replica*, std::function<void(Answer)>)> serve,
            std::function<void(std::optional<Answer>)> done);

  ReplicaGroup* group() const { return group_; }

 private:
  struct State {
    ReplicaGroup* group;
    absl::Mutex mu;
    std::vector<bool> reachable ABSL_GUARDED_BY(mu);
    raft::Rng rng ABSL_GUARDED_BY(mu);
    State(ReplicaGroup* g, uint64_t seed) : group(g), rng(seed) {}
    bool Reachable(size_t i) ABSL_LOCKS_EXCLUDED(mu);
    // The delay before a call to an unreachable replica fails (labrpc without
    // long delays: 0-100 ms, here 0-10 ms, scaled like the rest).
    absl::Duration UnreachableDelay() ABSL_LOCKS_EXCLUDED(mu);
  };

  ReplicaGroup* const group_;
  const std::shared_ptr<State> state_;
};

template <typename Answer>
void ClientLink::Call(size_t i,
                      std::function<void(const Replica*, std::function<void(Answer)>)> serve,
                      std::function<void(std::optional<Answer>)> done) {
  common::Timer& timer = group_->timer();
  if (!state_->Reachable(i)) {
    timer.RunAt(absl::Now() + state_->UnreachableDelay(),
                [done = std::move(done)] { done(std::nullopt); });
    return;
  }
  Network::Leg request = group_->net().ClientLeg();
  if (request.lost) {
    timer.RunAt(absl::Now() + request.delay, [done = std::move(done)] { done(std::nullopt); });
    return;
  }
  timer.RunAt(absl::Now() + request.delay, [state = state_, i, serve = std::move(serve),
                                            done = std::move(done)]() mutable {
    std::shared_ptr<Replica> replica = state->group->Get(static_cast<int>(i));
    // `replica` rides along so that a crash cannot destroy the incarnation
    // while its answer is on the way.
    auto reply = [state, i, replica, done = std::move(done)](Answer answer) mutable {
      Network::Leg leg = state->group->net().ClientLeg();
      state->group->timer().RunAt(absl::Now() + leg.delay,
                                  [state, i, lost = leg.lost, answer = std::move(answer),
                                   done = std::move(done)]() mutable {
                                    // The server acted, but the client may never hear of it.
                                    if (lost || !state->Reachable(i)) return done(std::nullopt);
                                    done(std::move(answer));
                                  });
    };
    serve(replica.get(), std::move(reply));
  });
}

// A service's client transport over a ClientLink: Base is the service's
// transport interface (client::KvTransport, client::CtrlTransport), whose
// Send(replica, Request, deadline, callback) this implements by running
// `handle` (the server's own request path, e.g. kv::HandleKvRequest) on the
// replica through the simulated network. A replica that is down answers
// UNAVAILABLE; a lost call ends UNAVAILABLE too.
template <typename Base, typename Request, typename Response>
class LinkTransport final : public Base {
 public:
  using HandleFn = std::function<void(const ReplicaContext& replica, Request request,
                                      absl::Time deadline, std::function<void(Response)> done)>;

  LinkTransport(ReplicaGroup* group, std::vector<int> servers, uint64_t seed, HandleFn handle)
      : link_(group, std::move(servers), seed), handle_(std::move(handle)) {}

  ClientLink& link() { return link_; }

  const std::vector<std::string>& endpoints() const override { return link_.endpoints(); }
  void Probe(size_t i, absl::Time deadline,
             std::function<void(absl::StatusOr<pb::StatusResponse>)> done) override {
    link_.Probe(i, deadline, std::move(done));
  }
  void RunAt(absl::Time when, std::function<void()> fn) override {
    link_.RunAt(when, std::move(fn));
  }

  void Send(size_t i, Request request, absl::Time deadline,
            std::function<void(Response)> done) override {
    link_.Call<Response>(
        i,
        [handle = handle_, request = std::move(request), deadline](
            const Replica* r, std::function<void(Response)> reply) {
          if (r == nullptr) return reply(Unavailable("replica down"));
          handle(*r->context, request, deadline, std::move(reply));
        },
        [done = std::move(done)](std::optional<Response> resp) {
          done(resp.has_value() ? std::move(*resp) : Unavailable("call lost"));
        });
  }

 private:
  static Response Unavailable(const char* why) {
    Response r;
    r.mutable_status()->set_code(static_cast<int>(absl::StatusCode::kUnavailable));
    r.mutable_status()->set_message(why);
    return r;
  }

  ClientLink link_;
  const HandleFn handle_;
};

// Seed for a test: DSTACK_TEST_SEED (or the older DSTACK_LAB3_SEED) if set,
// else a hash of `name`.
uint64_t TestSeed(const std::string& name);
// TestSeed of the running gtest test ("Suite.Name").
uint64_t CurrentTestSeed();

}  // namespace ds::rsm::testing
