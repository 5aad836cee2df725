// StateMachine: what an application replicated with the RSM layer (raft/rsm.h)
// implements. kvraft, shardctrler and shardkv are each one of these plus a gRPC
// service.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace ds::raft {

class StateMachine {
 public:
  virtual ~StateMachine() = default;

  // Applies the committed entry at `index`. Must be deterministic: the result
  // and the new state depend only on the state and `command`. An empty command
  // (a new leader's no-op, or a configuration entry) changes nothing but the
  // applied index. The returned bytes (or error) go to the proposer, if it is
  // waiting on this replica. Called on one thread, in log order.
  virtual absl::StatusOr<std::string> Apply(const std::string& command, uint64_t index) = 0;
  // The last applied index (0 before any).
  virtual uint64_t applied_index() const = 0;
  // The whole state as of applied_index(), including everything Apply depends
  // on (for example the client session table).
  virtual std::string Snapshot() const = 0;
  // Replaces the whole state with a Snapshot(). On error the state is unchanged.
  virtual absl::Status Restore(const std::string& snapshot) = 0;

  // What the Rsm stores as the snapshot at applied_index(): Snapshot() by
  // default; a state machine on disk returns a small description of files.
  // Called on the applying thread after FinishBatch(), without the Rsm's lock:
  // it must only read the state (reads may run at the same time).
  virtual absl::StatusOr<std::string> TakeSnapshot() { return Snapshot(); }
  // Called after each batch of Apply calls (before anyone reads the state).
  virtual void FinishBatch() {}
  // The Raft snapshot moved past `index`: snapshots below it are no longer
  // needed by this replica or, soon, by the peers fetching them.
  virtual void ReleaseSnapshotsBefore(uint64_t index) { (void)index; }
};

}  // namespace ds::raft
