// Rsm: the replicated state machine layer shared by kvraft, shardctrler and
// shardkv. It runs a Node and applies what it commits to a StateMachine, and
// gives the service three things:
//   - Submit(command): propose and wait until this replica applied it (or
//     learned it was lost, or the deadline passed); many may be in flight;
//   - Read(fn): run fn against the state at a linearizable point (ReadIndex:
//     nothing is written to the log);
//   - snapshots: when the persisted Raft state passes snapshot_threshold_bytes,
//     the state machine's snapshot replaces the log prefix; a replica restarts
//     from its snapshot plus the log after it.
// Both requests come in two forms: asynchronous (SubmitAsync, ReadAsync: a
// callback gets the outcome, no thread waits; what a server with thousands of
// requests in flight uses) and blocking (Submit, Read: built on the former).
// Exactly-once is the state machine's job (client sessions are part of its
// state and snapshots); the RSM only reports outcomes.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "raft/node/node.h"
#include "raft/rsm/state_machine.h"

namespace ds::raft {

struct RsmOptions {
  // Snapshot once Storage::RaftStateBytes() (the persisted log and hard state)
  // exceeds this (6.824's maxraftstate). 0: never snapshot. Unit: bytes.
  // Default: 64 MiB.
  uint64_t snapshot_threshold_bytes = 64ull << 20;
  // How often requests past their deadline are failed. A request is answered
  // at most this much after its deadline. Default: 10 ms.
  absl::Duration deadline_check_interval = absl::Milliseconds(10);
};

class Rsm {
 public:
  // Starts a Node over `storage` and `transport`; `sm` (which must outlive the
  // Rsm) is restored from the stored snapshot, then fed the log after it.
  static absl::StatusOr<std::unique_ptr<Rsm>> Start(RsmOptions options, NodeOptions node_options,
                                                    std::unique_ptr<Storage> storage,
                                                    std::unique_ptr<Transport> transport,
                                                    StateMachine* sm);
  ~Rsm();  // Stop()
  Rsm(const Rsm&) = delete;
  Rsm& operator=(const Rsm&) = delete;

  // Callbacks of the asynchronous calls run exactly once, on one of the Rsm's
  // or the Node's threads (or inline when the call fails at once). They must
  // be quick and must not block or call the blocking methods below; no Rsm
  // lock is held while they run.
  using ResultCallback = std::function<void(absl::StatusOr<std::string>)>;
  using StatusCallback = std::function<void(absl::Status)>;
  using QueryFn = std::function<void(const StateMachine&)>;

  // Proposes `command`; `done` gets what StateMachine::Apply returned once it
  // is applied here. Errors:
  //   kUnavailable, with raft::LeaderHint(status): not the leader, or the entry
  //     was overwritten by a new leader (not applied: retry at the leader), or
  //     a snapshot replaced it before we saw it (outcome unknown: retry; the
  //     state machine's sessions make the retry safe);
  //   kDeadlineExceeded: not applied by `deadline` (outcome unknown).
  void SubmitAsync(std::string command, absl::Time deadline, ResultCallback done);

  // Proposes a membership change (Node::ProposeConfChangeAsync); `done` gets
  // OK (an empty string) once the change is committed and applied here, or
  // the refusal or the errors of SubmitAsync.
  void ChangeMembershipAsync(pb::ConfChange change, absl::Time deadline, ResultCallback done);

  // Runs `query` on the state machine at a linearizable point (every write
  // completed before the call is visible), then `done` with OK. Otherwise
  // `done` gets kUnavailable (with a hint) if this replica knows it is not the
  // leader, kDeadlineExceeded if it could not confirm leadership and apply the
  // read point by `deadline`; `query` then does not run.
  void ReadAsync(absl::Time deadline, QueryFn query, StatusCallback done);

  // Blocking forms of the above.
  absl::StatusOr<std::string> Submit(std::string command, absl::Duration timeout);
  absl::Status Read(absl::Duration timeout, absl::FunctionRef<void(const StateMachine&)> fn);

  NodeStatus status() const { return node_->GetStatus(); }
  Node* node() { return node_.get(); }
  uint64_t snapshots_taken() const;

  // Stops the Node; pending requests fail with kUnavailable. Idempotent.
  void Stop();

 private:
  // One request in flight. Completed exactly once: whoever sets `finished`
  // (under mu_) delivers the outcome.
  struct Op {
    absl::Time deadline;
    ResultCallback done;  // writes
    QueryFn query;        // reads
    StatusCallback read_done;
    uint64_t term = 0;      // writes: set under mu_ once proposed
    uint64_t index = 0;     // writes: the entry; reads: the read point
    bool finished = false;  // guarded by mu_
    std::multimap<absl::Time, std::shared_ptr<Op>>::iterator by_deadline;
  };
  using OpPtr = std::shared_ptr<Op>;
  // An outcome to deliver once mu_ is released.
  struct Outcome {
    OpPtr op;
    absl::StatusOr<std::string> result;
  };

  Rsm(RsmOptions options, StateMachine* sm) : options_(options), sm_(sm) {}
  // SubmitAsync's machinery: `propose` hands the callback that registers the
  // waiter to the Node.
  void ProposeAndWait(absl::FunctionRef<void(Node::ProposeCallback)> propose, absl::Time deadline,
                      ResultCallback done);
  void OnApply(ApplyBatch batch);
  void MaybeSnapshot();
  // Marks `op` finished and no longer pending; false if it already was.
  bool ClaimLocked(const OpPtr& op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  OpPtr NewOpLocked(absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Delivers outcomes (no lock held). A read with an OK outcome runs its query.
  void Deliver(std::vector<Outcome>* outcomes);
  void RunDeadlines();

  const RsmOptions options_;
  StateMachine* const sm_;
  std::unique_ptr<Node> node_;  // set once by Start(), then read-only
  std::atomic<bool> started_{false};

  // Serializes Apply/Restore (apply thread) with read queries.
  mutable absl::Mutex sm_mu_;
  mutable absl::Mutex mu_;
  // Every unfinished request, by deadline.
  std::multimap<absl::Time, OpPtr> by_deadline_ ABSL_GUARDED_BY(mu_);
  // Writes waiting for their index to be applied.
  std::multimap<uint64_t, OpPtr> waiters_ ABSL_GUARDED_BY(mu_);
  // Reads whose read point is not applied yet, by read point.
  std::multimap<uint64_t, OpPtr> reads_waiting_ ABSL_GUARDED_BY(mu_);
  // The state machine's applied index as of the last finished apply batch.
  uint64_t applied_ ABSL_GUARDED_BY(mu_) = 0;
  // An entry can be applied before its Propose callback registers the
  // waiter: the Ready that appends it may also commit it (a one-voter group),
  // and the apply thread can run before the Raft thread calls back. While any
  // Submit is in that window (proposing_ > 0), results nobody waits for are
  // kept here, by index, with the entry's term; cleared when the window closes.
  int proposing_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, std::pair<uint64_t, absl::StatusOr<std::string>>> unclaimed_
      ABSL_GUARDED_BY(mu_);
  uint64_t snapshots_taken_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;

  absl::Notification stop_deadlines_;
  std::thread deadline_thread_;
};

}  // namespace ds::raft
