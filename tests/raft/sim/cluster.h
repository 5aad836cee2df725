// Cluster: a simulated Raft cluster in virtual time, playing the role of
// 6.824's config.go + labrpc: nodes are Cores over MemoryStorage, the network
// is a seeded event scheduler (delay, loss, reordering, duplication,
// partitions), crashes drop unsynced writes, and an applier per node checks
// the apply stream. Every event is followed by the invariant checker, so the
// first violation stops the run at the step that caused it.
//
// Nodes are addressed 0..n-1 (6.824 style); their Raft ids are 1..n.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "raft/core/core.h"
#include "raft/core/invariants.h"
#include "raft/core/rng.h"
#include "raft/storage/memory_storage.h"

namespace ds::raft::sim {

struct ClusterOptions {
  int nodes = 3;
  // The first `initial_voters` nodes bootstrap the cluster (0: all); the others
  // start outside it, as `--initial-cluster-state=existing` replicas, and join
  // when added through ChangeMembership.
  int initial_voters = 0;
  uint64_t seed = 1;
  // Virtual milliseconds per Core::Tick(). With election_ticks = 10 the
  // election timeout is 1-2 s, heartbeats go out 10 times per second (the
  // 6.824 handout's limits).
  uint64_t tick_ms = 100;
  // 0: no snapshots. Otherwise the applier snapshots at every index i with
  // (i + 1) % snapshot_interval == 0, as 6.824's applierSnap does.
  uint64_t snapshot_interval = 0;
  // Entries those snapshots leave in the log below their index.
  LogRetention log_retention;
  // Print every event to stdout.
  bool verbose = false;
  Options raft;
};

struct NetworkFaults {
  bool reliable = true;          // false: 0-26 ms delay, 10% loss per message
  bool long_reordering = false;  // responses: 2/3 delayed by 200 + rand(rand(2000)) ms
  uint64_t duplicate_per_mille = 0;
  uint64_t max_delay_ms = 5;  // reliable delay upper bound
};

class Cluster {
 public:
  explicit Cluster(const ClusterOptions& options);
  ~Cluster();

  int size() const { return static_cast<int>(nodes_.size()); }
  uint64_t now_ms() const { return now_ms_; }
  Rng& rng() { return rng_; }

  // ---- Time ----
  // Processes events up to now + ms (stops early on an invariant violation).
  void RunFor(uint64_t ms);

  // ---- Faults ----
  // 6.824 connect/disconnect: a link works iff both ends are connected (and
  // the directed link is not blocked).
  void Disconnect(int i);
  void Connect(int i);
  bool connected(int i) const { return nodes_[i].connected; }
  // Directed link block, for asymmetric partitions (cleared by HealLinks).
  void BlockLink(int from, int to, bool blocked);
  void HealLinks();
  NetworkFaults& faults() { return faults_; }
  // Crash: the node loses its unsynced writes and every message in flight to
  // it; it stays down until Restart (which does not connect it).
  void Crash(int i);
  void Restart(int i);
  bool alive(int i) const { return nodes_[i].core != nullptr; }

  // ---- The 6.824 Raft API ----
  struct StartResult {
    uint64_t index = 0;
    uint64_t term = 0;
    bool is_leader = false;
  };
  StartResult Start(int i, std::string command);
  // Requests a ReadIndex on node i; read states are checked automatically.
  void ReadIndex(int i, std::string context);
  // Asks node i (if leader) to hand leadership to node `to`.
  void TransferLeadership(int i, int to);
  // Proposes a membership change at node i (Core::ProposeConfChange).
  absl::StatusOr<uint64_t> ChangeMembership(int i, const pb::ConfChange& change);

  // (term, is_leader) of a live node.
  std::pair<uint64_t, bool> GetState(int i) const;
  Core* core(int i) { return nodes_[i].core.get(); }
  MemoryStorage& storage(int i) { return *nodes_[i].storage; }

  // ---- 6.824 checks (each returns a failure as an error status) ----
  absl::StatusOr<int> CheckOneLeader();
  absl::Status CheckNoLeader();
  absl::StatusOr<uint64_t> CheckTerms();
  // Number of nodes whose applier applied index; *command is set to it.
  int NCommitted(uint64_t index, std::string* command);
  // Submits command until some leader accepts it and >= n nodes apply it at
  // that index (10 s; each attempt waits 2 s). Returns the index.
  absl::StatusOr<uint64_t> One(std::string command, int n, bool retry);
  // Waits (about 30 s) until >= n nodes applied index; stops early (returns
  // nullopt) if a term passed start_term (start_term 0: never).
  absl::StatusOr<std::optional<std::string>> Wait(uint64_t index, int n, uint64_t start_term);

  // ---- Statistics ----
  // Requests (MsgApp, MsgVote, MsgPreVote, MsgHeartbeat, MsgSnap,
  // MsgTimeoutNow) dispatched to node i: what labrpc's GetCount counts.
  uint64_t RpcCount(int i) const { return nodes_[i].rpcs_received; }
  uint64_t TotalRpcs() const;
  uint64_t TotalBytes() const { return total_bytes_; }
  uint64_t LogSize();       // max RaftStateBytes over nodes
  uint64_t SnapshotSize();  // max SnapshotBytes over nodes
  uint64_t read_states_checked() const { return read_states_checked_; }
  // Snapshots received from a leader and installed (InstallSnapshot).
  uint64_t snapshots_installed() const { return snapshots_installed_; }

  // The first violation (invariant, applier, read) seen; sticky.
  const absl::Status& status() const { return status_; }

 private:
  struct App {
    uint64_t last_applied = 0;
    std::map<uint64_t, std::string> commands;  // index -> data ("" for no-ops)
  };
  struct Node {
    std::unique_ptr<MemoryStorage> storage;
    std::unique_ptr<Core> core;
    uint64_t incarnation = 0;
    bool connected = true;
    bool bootstrap = true;  // restarts with the bootstrap peers (else: joins)
    bool drive_scheduled = false;
    App app;
    uint64_t rpcs_received = 0;
    // ReadIndex context -> cluster-wide max commit when requested.
    std::map<std::string, uint64_t> pending_reads;
  };
  enum class EventType { kTick, kDeliver, kDrive, kLocal };
  struct Event {
    uint64_t time_ms;
    uint64_t seq;
    EventType type;
    int node;
    uint64_t incarnation;
    pb::Message msg;
  };
  struct EventOrder {
    bool operator()(const Event& a, const Event& b) const {
      return a.time_ms != b.time_ms ? a.time_ms > b.time_ms : a.seq > b.seq;
    }
  };

  void Schedule(Event e);
  void ScheduleTick(int i, uint64_t delay_ms);
  void ScheduleDrive(int i);
  void ProcessEvent(Event& e);
  // Handles every Ready of node i in the order the Core contract requires.
  void Drive(int i);
  void SendMessage(int from, pb::Message m);
  // The transport's report of a MsgSnap's fate (MSG_SNAP_STATUS) to its sender.
  void ReportSnapshot(const pb::Message& snap, bool failed);
  void Apply(int i, const pb::Entry& e);
  void RestoreApp(int i, const pb::Snapshot& snap);
  std::string SnapshotData(const App& app) const;
  bool LinkUp(int from, int to) const;
  void CheckInvariants();
  void Fail(absl::Status s);
  void Trace(const std::string& line);

  ClusterOptions options_;
  NetworkFaults faults_;
  Rng rng_;
  InvariantChecker checker_;
  std::vector<Node> nodes_;
  std::vector<std::vector<bool>> blocked_;
  std::priority_queue<Event, std::vector<Event>, EventOrder> events_;
  uint64_t now_ms_ = 0;
  uint64_t seq_ = 0;
  uint64_t total_bytes_ = 0;
  uint64_t read_states_checked_ = 0;
  uint64_t snapshots_installed_ = 0;
  absl::Status status_;
};

// Message type name for traces.
std::string MessageSummary(const pb::Message& m);

}  // namespace ds::raft::sim
