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
// Exactly-once is the state machine's job (client sessions are part of its
// state and snapshots); the RSM only reports outcomes.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "raft/node.h"
#include "raft/state_machine.h"

namespace ds::raft {

struct RsmOptions {
  // Snapshot once Storage::RaftStateBytes() (the persisted log and hard state)
  // exceeds this (6.824's maxraftstate). 0: never snapshot. Unit: bytes.
  // Default: 64 MiB.
  uint64_t snapshot_threshold_bytes = 64ull << 20;
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

  // Proposes `command` and waits until it is applied here; returns what
  // StateMachine::Apply returned. Errors:
  //   kUnavailable, with raft::LeaderHint(status): not the leader, or the entry
  //     was overwritten by a new leader (not applied: retry at the leader), or
  //     a snapshot replaced it before we saw it (outcome unknown: retry; the
  //     state machine's sessions make the retry safe);
  //   kDeadlineExceeded: not applied within `timeout` (outcome unknown).
  absl::StatusOr<std::string> Submit(std::string command, absl::Duration timeout);

  // Runs `fn` on the state machine at a linearizable point: every write
  // completed before Read was called is visible. kDeadlineExceeded if this
  // replica cannot confirm leadership in time; kUnavailable (with a hint) if it
  // knows it is not the leader.
  absl::Status Read(absl::Duration timeout, absl::FunctionRef<void(const StateMachine&)> fn);

  NodeStatus status() const { return node_->GetStatus(); }
  Node* node() { return node_.get(); }
  uint64_t snapshots_taken() const;

  // Stops the Node; pending Submits fail with kUnavailable. Idempotent.
  void Stop();

 private:
  struct Waiter {
    uint64_t term = 0;   // set under mu_ once proposed
    uint64_t index = 0;  // set under mu_ once proposed
    absl::StatusOr<std::string> result;
    absl::Notification done;
  };

  Rsm(RsmOptions options, StateMachine* sm) : options_(options), sm_(sm) {}
  void OnApply(ApplyBatch batch);
  void MaybeSnapshot();
  void Finish(uint64_t index, absl::StatusOr<std::string> result, uint64_t term);

  const RsmOptions options_;
  StateMachine* const sm_;
  std::unique_ptr<Node> node_;  // set once by Start(), then read-only
  std::atomic<bool> started_{false};

  // Serializes Apply/Restore (apply thread) with Read callbacks.
  mutable absl::Mutex sm_mu_;
  mutable absl::Mutex mu_;
  // Submits waiting for their index to be applied.
  std::multimap<uint64_t, std::shared_ptr<Waiter>> waiters_ ABSL_GUARDED_BY(mu_);
  // An entry can be applied before its Propose callback registers the
  // waiter: the Ready that appends it may also commit it (a one-voter group),
  // and the apply thread can run before the Raft thread calls back. While any
  // Submit is in that window
  // (proposing_ > 0), results nobody waits for are kept here, by index, with
  // the entry's term; cleared when the window closes.
  int proposing_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, std::pair<uint64_t, absl::StatusOr<std::string>>> unclaimed_
      ABSL_GUARDED_BY(mu_);
  uint64_t snapshots_taken_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace ds::raft
