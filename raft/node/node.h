// Node: the driver that runs one Raft replica on real threads, a real clock, a
// Storage and a Transport around the pure Core (raft/core.h).
//
// Threads:
//   - the Raft thread owns the Core. Each loop iteration takes everything that
//     arrived since the last one (messages, proposals, reads, transfers,
//     snapshot requests, due ticks), steps the core with all of it, then handles
//     ONE Ready: one Storage::Save (fsync'd when the Ready needs it) for the
//     whole batch (group commit), then the messages, which depend on it.
//   - the apply thread hands committed entries and snapshots to the
//     application's callback, so a slow application never stalls the Raft loop
//     (heartbeats, elections and replication keep going).
// No Node mutex is held across Save, a send or the apply callback.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "raft/core/core.h"
#include "raft/core/options.h"
#include "raft/storage/storage.h"
#include "raft/transport/transport.h"
#include "spdlog/logger.h"

namespace prometheus {
class Counter;
class Histogram;
class Registry;
}  // namespace prometheus

namespace ds::raft {

// What the Node counts and times as it runs, for a daemon's /metrics (every
// pointer non-null; see Register). The Node's state (term, role, indexes,
// log and snapshot sizes) is not here: it is read from GetStatus() when
// scraped. Updated once per loop iteration or apply batch, never per request.
struct NodeMetrics {
  // dstack_raft_proposals_total: commands appended to the log as leader.
  prometheus::Counter* proposals = nullptr;
  // dstack_raft_storage_sync_duration_seconds: Storage::Save calls that
  // fsync (one per Ready that needs it: the group commit).
  prometheus::Histogram* sync_seconds = nullptr;
  // dstack_raft_apply_duration_seconds: the application's callback, per
  // batch of committed entries (or snapshot) handed to it.
  prometheus::Histogram* apply_seconds = nullptr;
  // dstack_raft_applied_entries_total: entries handed to the application.
  prometheus::Counter* applied_entries = nullptr;
  // dstack_raft_snapshots_total{origin="local"}: snapshots this replica
  // took of its application; {origin="leader"}: installed from the leader.
  prometheus::Counter* snapshots_local = nullptr;
  prometheus::Counter* snapshots_from_leader = nullptr;
  // dstack_raft_snapshot_written_bytes_total: data bytes of those snapshots.
  prometheus::Counter* snapshot_bytes = nullptr;

  // Creates the families in `registry` (one Node per registry).
  static NodeMetrics Register(prometheus::Registry& registry);
};

// Brings the files of a snapshot to this replica before the core installs
// it, for state machines whose snapshot data only names files (a checkpoint
// of a state on disk, raft/rsm/disk_state.h). The leader's transport sends
// the small description; the gate fetches the files from the sender while
// the Raft loop goes on, then hands the message to the core.
class SnapshotGate {
 public:
  virtual ~SnapshotGate() = default;
  // For each incoming MsgSnap, on a transport thread. true: the core may take
  // it now. false: the gate keeps it and later calls `deliver` with it (from
  // any thread) once the files are complete here, or drops it (the leader
  // sends the snapshot again).
  virtual bool Admit(const pb::Message& msg, std::function<void(pb::Message)> deliver) = 0;
  // Ends every fetch; no `deliver` runs after this returns.
  virtual void Stop() = 0;
};

struct NodeOptions {
  // This replica's id (non-zero, unique in the group). Required.
  uint64_t id = 0;
  // Options of the core: initial peers, election/heartbeat ticks, flow control.
  // Every timeout there counts ticks of tick_interval below.
  Options raft;
  // Period of Core::Tick(). Election timeout = raft.election_ticks *
  // tick_interval (randomized up to twice that). Default: 100 ms (etcd's), so
  // elections after 1-2 s with the default 10 ticks.
  absl::Duration tick_interval = absl::Milliseconds(100);
  // Proposals taken into one loop iteration (one Ready, one fsync); the rest
  // wait for the next one. Bounds the size of a single Save. Unit: proposals.
  // Default: 4096.
  size_t max_proposals_per_ready = 4096;
  // Logger; default: common::MakeLogger("raft-<id>").
  std::shared_ptr<spdlog::logger> logger;
  // Counters and histograms to update (must outlive the Node); nullptr
  // (default): none.
  const NodeMetrics* metrics = nullptr;
  // See SnapshotGate; nullptr (default): every snapshot carries its data.
  std::shared_ptr<SnapshotGate> snapshot_gate;
  // Entries a local snapshot leaves in the log below its index, so that a
  // follower that far behind catches up from the log rather than by receiving
  // the snapshot. Default: none (servers: --snapshot-catchup-entries/-bytes).
  LogRetention log_retention;
};

// What the application receives, in log order, on the apply thread.
struct ApplyBatch {
  // Restore the state machine from this snapshot first (a follower that was too
  // far behind received it from the leader).
  std::optional<pb::Snapshot> snapshot;
  // Committed entries to apply in order. Includes the empty ENTRY_NORMAL a new
  // leader commits (skip empty data) and ENTRY_CONF_CHANGE entries.
  std::vector<pb::Entry> entries;
};

struct NodeStatus {
  uint64_t id = 0;
  Role role = Role::kFollower;
  uint64_t term = 0;
  uint64_t leader = 0;          // 0: unknown
  uint64_t commit = 0;          // commit index
  uint64_t applied = 0;         // applied by the application (callback returned)
  uint64_t last_index = 0;      // last log index
  uint64_t snapshot_index = 0;  // Storage::SnapshotIndex()
  uint64_t first_index = 0;     // Storage::FirstIndex(): first entry in the log
  uint64_t log_bytes = 0;       // Storage::RaftStateBytes()
  uint64_t snapshot_bytes = 0;  // Storage::SnapshotBytes()
  uint64_t saves = 0;           // Storage::Save calls
  uint64_t synced_saves = 0;    // ... of which with sync (fsync)
  uint64_t loops = 0;           // Raft loop iterations
  // The configuration in use (Core::conf_state()) and whether it is committed
  // (false: a membership change is in progress). Never null after Start.
  std::shared_ptr<const pb::ConfState> conf;
  bool conf_committed = true;
};

// Where Propose put the command: it is committed once an ApplyBatch delivers
// an entry with this index AND term (another term at that index: it was lost
// to a leader change, retry).
struct Proposal {
  uint64_t index = 0;
  uint64_t term = 0;
};

// kUnavailable "not leader" statuses carry the known leader's id (0: unknown).
uint64_t LeaderHint(const absl::Status& status);
// Such a status, naming `leader` (0: unknown).
absl::Status NotLeaderError(uint64_t leader);

class Node {
 public:
  using ApplyFn = std::function<void(ApplyBatch batch)>;

  // Restores the core from `storage` and starts the Raft and apply threads and
  // the transport. `apply` runs on the apply thread. kDataLoss if the storage
  // is corrupt (CheckStorageForRestart).
  static absl::StatusOr<std::unique_ptr<Node>> Start(NodeOptions options,
                                                     std::unique_ptr<Storage> storage,
                                                     std::unique_ptr<Transport> transport,
                                                     ApplyFn apply);
  ~Node();  // Stop()
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Stops the transport, the Raft loop and the apply thread (batches not yet
  // applied are dropped; they are in the log). Idempotent.
  void Stop();

  // Appends `data` to the log if we are the leader. kUnavailable with a
  // LeaderHint otherwise, or after Stop(). Blocks for one Raft loop iteration.
  absl::StatusOr<Proposal> Propose(std::string data);

  // Propose without blocking: `done` gets the result on the Raft thread (or
  // inline after Stop()), so it must be quick and must not block or call a
  // blocking Node method. For servers that keep many proposals in flight
  // without a thread each.
  using ProposeCallback = std::function<void(absl::StatusOr<Proposal>)>;
  void ProposeAsync(std::string data, ProposeCallback done);

  // A linearizable read point (§6.4, ReadIndex): returns an index such that
  // the application state, once it has applied at least that index, reflects
  // every write committed before the call. Waits for the leader's heartbeat
  // round and for the local apply. Leader only: kUnavailable with a
  // LeaderHint elsewhere (the core does not forward reads). kDeadlineExceeded
  // after `timeout` (e.g. leadership was lost meanwhile; retry at the leader).
  absl::StatusOr<uint64_t> ReadIndex(absl::Duration timeout);

  // The read point only, without blocking and without waiting for the local
  // apply: `done` gets the index (or kUnavailable with a LeaderHint) on the
  // Raft thread, or inline after Stop(). Same rules as ProposeAsync's callback.
  // A request whose heartbeat round never completes is answered when
  // leadership is lost or the Node stops; callers that need a deadline keep
  // their own.
  using ReadIndexCallback = std::function<void(absl::StatusOr<uint64_t>)>;
  void ReadIndexAsync(ReadIndexCallback done);

  // Asks the leader (us) to hand leadership to `to`. Best effort.
  void TransferLeadership(uint64_t to);

  // Appends a membership change (Core::ProposeConfChange) if we are the
  // leader; `done` gets where (or the core's refusal: kUnavailable with a
  // LeaderHint when not the leader, kUnavailable "retry" while another change
  // is in progress, kAlreadyExists, kNotFound, kFailedPrecondition,
  // kInvalidArgument), with the same rules as ProposeAsync's callback. The
  // change is in effect here at once; it is committed once an ApplyBatch
  // delivers the entry with that index and term.
  void ProposeConfChangeAsync(pb::ConfChange change, ProposeCallback done);

  // The application has captured its state `data` as of applied index `index`:
  // store it as the snapshot and discard the log up to `index`. Runs on the
  // Raft thread; returns when durable. kFailedPrecondition if `index` is above
  // the applied index or below the current snapshot.
  absl::Status Snapshot(uint64_t index, std::string data);

  // Waits until the application has applied `index`; false on timeout/stop.
  bool WaitForApplied(uint64_t index, absl::Duration timeout);

  NodeStatus GetStatus() const;
  uint64_t id() const { return options_.id; }

 private:
  struct PendingProposal {
    std::string data;
    std::optional<pb::ConfChange> conf_change;
    absl::Status status;
    Proposal result;
    ProposeCallback done;
  };
  // A ReadIndex answer to deliver once mu_ is released.
  struct ReadAnswer {
    ReadIndexCallback done;
    absl::StatusOr<uint64_t> result;
  };
  struct SnapshotRequest {
    uint64_t index = 0;
    std::string data;
    absl::Status status;
    absl::Notification done;
  };

  Node(NodeOptions options, std::unique_ptr<Storage> storage, std::unique_ptr<Transport> transport,
       ApplyFn apply);

  void RunRaft();
  void RunApply();
  // Handles one Ready from the core. False if persisting failed (fatal).
  bool HandleReady(std::vector<ReadAnswer>* answers);
  void DoSnapshot(SnapshotRequest* req);
  // Moves the ReadIndex calls of `contexts` to `out`, failed with "not leader"
  // (Raft thread).
  void FailReadsLocked(const std::vector<std::string>& contexts, std::vector<ReadAnswer>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishStatus();
  // Republishes the core's configuration if it changed (Raft thread).
  void RefreshConf();
  bool HasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const NodeOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<Storage> storage_;
  std::unique_ptr<Transport> transport_;
  const ApplyFn apply_;
  // Owned by the Raft thread (created before it starts).
  std::unique_ptr<Core> core_;
  uint64_t saves_ = 0;         // Raft thread only
  uint64_t synced_saves_ = 0;  // Raft thread only
  uint64_t loops_ = 0;         // Raft thread only
  // The configuration last published (Raft thread only): republished, and
  // handed to the transport, when the core's conf_version() moves.
  std::shared_ptr<const pb::ConfState> published_conf_;
  uint64_t published_conf_version_ = 0;

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Inputs for the Raft thread, taken in bulk each iteration.
  std::vector<pb::Message> inbox_ ABSL_GUARDED_BY(mu_);
  std::deque<PendingProposal> proposals_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> read_requests_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> transfers_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<SnapshotRequest>> snapshot_requests_ ABSL_GUARDED_BY(mu_);
  // ReadIndex calls waiting for their ReadState, by context.
  std::map<std::string, ReadIndexCallback> reads_ ABSL_GUARDED_BY(mu_);
  // The ReadIndex requests of one loop iteration share one core ReadIndex (one
  // heartbeat round instead of one per request): the batch's context is its
  // first request's, mapped here to every request of the batch. Leader only;
  // cleared (requests failed with "not leader") when leadership is lost.
  std::map<std::string, std::vector<std::string>> read_batches_ ABSL_GUARDED_BY(mu_);
  uint64_t next_read_id_ ABSL_GUARDED_BY(mu_) = 0;
  // Committed entries and snapshots handed to the apply thread.
  std::deque<ApplyBatch> apply_queue_ ABSL_GUARDED_BY(mu_);
  uint64_t applied_ ABSL_GUARDED_BY(mu_) = 0;
  NodeStatus status_ ABSL_GUARDED_BY(mu_);

  std::thread raft_thread_;
  std::thread apply_thread_;
};

}  // namespace ds::raft
