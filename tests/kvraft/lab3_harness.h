// The harness of the in-process 6.824 lab 3 (KV-Raft) scenarios: N kvraft
// replicas in one process, each the production stack (raft::Node under
// raft::Rsm applying to kv::KvReplicatedStateMachine), connected by a
// fault-injecting in-memory network, driven by test clerks.
//
// What it models, after 6.824's labrpc and kvraft/config.go:
//   - Network: the Raft messages between replicas and the clerks' calls to
//     replicas. Partitions (arbitrary groups of replicas; a clerk has its own
//     set of replicas it can reach), and an "unreliable" mode: each message or
//     call leg is lost with probability 10% and delayed uniformly in [0, 27 ms]
//     (which also reorders them).
//   - Crash: Stop the replica, drop every storage write that was not synced
//     (raft::MemoryStorage::SimulateCrash, a power loss), restart it from its
//     own storage with a fresh state machine. MemoryStorage rather than
//     RocksDbStorage because it makes "lost unsynced writes" exact and costs no
//     fsync, so dozens of replicas fit on a busy 2-core machine under ASan; the
//     RocksDB path is covered by tests/raft/crash_test.cc and the multi-process
//     tests.
//   - Clerk: opens a session through the log before its first write (an
//     OP_REGISTER command, as the Register RPC does), then numbers its writes
//     (exactly-once), remembers the leader, retries at another replica on "not
//     leader", timeout or a lost call, and records every operation for the
//     linearizability checker.
//
// Timing is scaled down from 6.824 (100 ms heartbeats, ~1 s election timeout)
// by 10x: 10 ms ticks, heartbeat every tick, elections after 100-200 ms.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kvraft/kv_service.h"
#include "proto/kv.pb.h"
#include "raft/storage/memory_storage.h"
#include "raft/core/rng.h"
#include "raft/rsm/rsm.h"
#include "raft/transport/transport.h"
#include "tests/lincheck/linearizability.h"

namespace ds::kv::lab3 {

// ---------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------

class Network {
 public:
  explicit Network(uint64_t seed);
  ~Network();
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  // The Transport of one incarnation of replica `id`.
  std::unique_ptr<raft::Transport> NewTransport(uint64_t id);

  void SetReliable(bool reliable) ABSL_LOCKS_EXCLUDED(mu_);
  // In unreliable mode, also deliver this fraction of the Raft messages twice
  // (each copy with its own delay). labrpc never duplicates. Unit: 1/1000.
  void SetDuplicatePerMille(uint64_t per_mille) ABSL_LOCKS_EXCLUDED(mu_);

  // Replicas in the same group reach each other; replicas in no group are
  // isolated. Replaces the previous partition.
  void Partition(const std::vector<std::vector<uint64_t>>& groups) ABSL_LOCKS_EXCLUDED(mu_);
  void ConnectAll() ABSL_LOCKS_EXCLUDED(mu_);

  // One leg of a clerk's call (request or reply): lost or not, and its delay.
  struct Leg {
    bool lost = false;
    absl::Duration delay;
  };
  Leg ClientLeg() ABSL_LOCKS_EXCLUDED(mu_);

  // Raft messages delivered / lost (partition, loss, replica down), and how
  // many of the delivered ones were InstallSnapshot (MSG_SNAP).
  uint64_t delivered() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t dropped() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t snapshots_delivered() const ABSL_LOCKS_EXCLUDED(mu_);

  // Probability of loss and the largest delay in unreliable mode (labrpc's).
  static constexpr uint64_t kLossPerMille = 100;
  static constexpr absl::Duration kMaxDelay = absl::Milliseconds(27);

 private:
  class Endpoint;
  class MemTransport;
  struct InFlight {
    absl::Time deliver_at;
    uint64_t seq;
    raft::pb::Message message;
    bool operator>(const InFlight& o) const {
      return deliver_at != o.deliver_at ? deliver_at > o.deliver_at : seq > o.seq;
    }
  };

  void Register(uint64_t id, std::shared_ptr<Endpoint> ep) ABSL_LOCKS_EXCLUDED(mu_);
  void Unregister(uint64_t id, const Endpoint* ep) ABSL_LOCKS_EXCLUDED(mu_);
  void Send(uint64_t from, std::vector<raft::pb::Message> messages) ABSL_LOCKS_EXCLUDED(mu_);
  // Queues a report (MSG_UNREACHABLE / MSG_SNAP_STATUS) for `m`'s sender.
  void ReportLocked(const raft::pb::Message& m, raft::pb::MessageType type, bool reject,
                    absl::Time at) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EnqueueLocked(raft::pb::Message m, absl::Time at) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ConnectedLocked(uint64_t a, uint64_t b) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Duration DelayLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Dispatch();

  mutable absl::Mutex mu_;
  raft::Rng rng_ ABSL_GUARDED_BY(mu_);
  bool reliable_ ABSL_GUARDED_BY(mu_) = true;
  uint64_t duplicate_per_mille_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // While partitioned_: replica id -> group (absent: isolated).
  bool partitioned_ ABSL_GUARDED_BY(mu_) = false;
  std::map<uint64_t, int> group_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::shared_ptr<Endpoint>> endpoints_ ABSL_GUARDED_BY(mu_);
  std::priority_queue<InFlight, std::vector<InFlight>, std::greater<>> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t delivered_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t snapshots_delivered_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread dispatcher_;
};

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

struct ClusterOptions {
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
  // Seeds the network, the Raft cores and the clerks (tests pass TestSeed()).
  // Threads and the real clock make runs differ anyway. Default: 1.
  uint64_t seed = 1;
};

class Clerk;

class Cluster {
 public:
  explicit Cluster(ClusterOptions options);
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  int n() const { return options_.servers; }
  const ClusterOptions& options() const { return options_; }
  std::vector<int> All() const;
  Network& net() { return net_; }
  // Where clerks record operations. TakeHistory() returns what was recorded
  // and starts a new history; call it only while no clerk is in an operation.
  lincheck::HistoryRecorder& history() ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<lincheck::Operation> TakeHistory() ABSL_LOCKS_EXCLUDED(mu_);

  // Crash: stop replica i and lose its unsynced writes. Idempotent.
  void ShutdownServer(int i) ABSL_LOCKS_EXCLUDED(mu_);
  // Restart replica i from its storage (after ShutdownServer).
  void StartServer(int i) ABSL_LOCKS_EXCLUDED(mu_);

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
  uint64_t LogSize() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t SnapshotSize() const ABSL_LOCKS_EXCLUDED(mu_);

  // A clerk that reaches `servers` (default: all).
  std::unique_ptr<Clerk> MakeClerk(std::vector<int> servers = {});
  uint64_t NextSeed() { return seed_counter_.fetch_add(1) * 0x9e3779b97f4a7c15ull + options_.seed; }

  // ---- Server side of a clerk's call (what KvServiceImpl does over gRPC) ----
  // A write: Put/Append with client id and sequence set, or a register.
  // kUnavailable or kDeadlineExceeded: retry (*leader_hint: the leader's replica id, 0 if
  // unknown); anything else is final.
  absl::StatusOr<pb::KvResult> ServeWrite(int i, pb::KvCommand command, absl::Duration timeout,
                                          uint64_t* leader_hint);
  // A linearizable Get through ReadIndex.
  absl::StatusOr<pb::KvResult> ServeGet(int i, const std::string& key, absl::Duration timeout,
                                        uint64_t* leader_hint);

 private:
  struct Server {
    explicit Server(KvStateMachineOptions o) : sm(o) {}
    KvReplicatedStateMachine sm;  // outlives rsm (declared first)
    std::unique_ptr<raft::Rsm> rsm;
  };
  std::shared_ptr<Server> GetServer(int i) const ABSL_LOCKS_EXCLUDED(mu_);
  static uint64_t Id(int i) { return static_cast<uint64_t>(i) + 1; }

  const ClusterOptions options_;
  Network net_;
  std::atomic<uint64_t> seed_counter_{1};
  // Names clerks in histories and messages (the session ids come from the log).
  std::atomic<int64_t> next_clerk_label_{1};
  // Each replica's disk; survives ShutdownServer.
  std::vector<std::shared_ptr<raft::MemoryStorage>> storage_;
  mutable absl::Mutex mu_;
  // nullptr while the replica is down. Calls in progress hold their own
  // reference, so a crash never destroys a replica under a caller.
  std::vector<std::shared_ptr<Server>> servers_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<lincheck::HistoryRecorder> history_ ABSL_GUARDED_BY(mu_) =
      std::make_unique<lincheck::HistoryRecorder>();
};

// ---------------------------------------------------------------------------
// Clerk
// ---------------------------------------------------------------------------

class Clerk {
 public:
  // Deadline of one attempt at one replica (then try another). Also bounds
  // how long a leader cut off by a partition can hold a call.
  static constexpr absl::Duration kAttemptTimeout = absl::Milliseconds(500);
  // A clerk retries "forever" as in 6.824, but tests must end: an operation
  // that has not completed after this long fails (kDeadlineExceeded).
  static constexpr absl::Duration kGiveUpAfter = absl::Seconds(30);

  // `label` names the clerk in the history and in messages.
  Clerk(Cluster* cluster, int64_t label, std::vector<int> servers, uint64_t seed);

  absl::StatusOr<std::string> Get(const std::string& key);
  absl::Status Put(const std::string& key, const std::string& value);
  absl::Status Append(const std::string& key, const std::string& value);

  // Which replicas this clerk's calls can reach (config.go's ConnectClient).
  void ConnectTo(std::vector<int> servers) ABSL_LOCKS_EXCLUDED(mu_);
  // The session id: the index of the register entry; 0 before the first write.
  uint64_t client_id() const { return client_id_; }

 private:
  // Registers a session through the log unless the clerk has one.
  absl::Status EnsureSession();
  absl::Status Write(pb::OpType op, const std::string& key, const std::string& value);
  // One call to replica i through the network; nullopt if the call or its
  // reply was lost (the clerk cannot tell the two apart).
  std::optional<absl::StatusOr<pb::KvResult>> Call(int i, const pb::KvCommand* write,
                                                   const std::string& key, uint64_t* leader_hint);
  // Runs one operation to completion: retries until a replica answers.
  absl::StatusOr<pb::KvResult> Run(const pb::KvCommand* write, const std::string& key);
  // The next replica to try after a failed attempt at `failed`.
  int NextServer(int failed, uint64_t hint) ABSL_LOCKS_EXCLUDED(mu_);
  bool Reachable(int i) const ABSL_LOCKS_EXCLUDED(mu_);

  Cluster* const cluster_;
  const int64_t label_;
  uint64_t client_id_ = 0;  // 0: no session yet; one operation at a time per clerk
  uint64_t sequence_ = 0;   // last used
  int leader_ = 0;          // index of the replica tried first
  mutable absl::Mutex mu_;
  std::vector<bool> reachable_ ABSL_GUARDED_BY(mu_);
  raft::Rng rng_ ABSL_GUARDED_BY(mu_);
};

// ---------------------------------------------------------------------------
// 6.824's GenericTest
// ---------------------------------------------------------------------------

struct GenericTestOptions {
  int clients = 1;
  int servers = 5;
  bool unreliable = false;
  bool crash = false;       // restart every replica at the end of each iteration
  bool partitions = false;  // repartition the replicas at random while clients run
  int64_t maxraftstate = -1;
  bool randomkeys = false;  // clients share keys and Put too; no value prediction
  // Shortened from 6.824 (3 iterations of 5 s, partitions every 1-1.2 s): the
  // election timeout is 10x shorter here, so the same number of elections
  // and partitions per phase take 10x less time. 1.5 s phases still give
  // each client hundreds of operations per iteration (thousands on a
  // reliable network).
  int iterations = 3;
  absl::Duration phase = absl::Milliseconds(1500);
  // Beyond 6.824: while the clients run, crash one random replica every
  // this often and restart it 100 ms later. Zero: never.
  absl::Duration crash_one_every = absl::ZeroDuration();
  // Beyond 6.824: duplicated Raft messages (unreliable only), per mille.
  uint64_t duplicate_per_mille = 0;
  // *Linearizable tests: a checker timeout is a failure, not a pass.
  bool require_linearizability_verdict = false;
};

// Runs the scenario; failures are reported through gtest.
void GenericTest(const GenericTestOptions& options, uint64_t seed);

// GenericTestSpeed: 1000 sequential Appends at 3 replicas must average at
// most a third of a heartbeat interval each.
void GenericTestSpeed(int64_t maxraftstate, uint64_t seed);

// checkClntAppends: each "x <client> <j> y" for j < count appears exactly
// once in `value`, in order of j. Empty string if so, else what is wrong.
std::string CheckClientAppends(int client, const std::string& value, int count);

// Porcupine's check as 6.824 does it: kIllegal fails the test; kUnknown (the
// budget ran out) passes, as in 6.824, unless `require_verdict`. The checker
// interns every register state, and Append histories make ever-longer states,
// so its cost grows with (operations per key)^2: keep histories short.
void CheckHistory(const std::vector<lincheck::Operation>& ops, bool require_verdict,
                  absl::Duration budget);

// Seed for a test: DSTACK_LAB3_SEED if set, else a hash of `name`.
uint64_t TestSeed(const std::string& name);

}  // namespace ds::kv::lab3
