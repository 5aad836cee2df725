// InvariantChecker: the Raft safety properties (Figure 3 of the paper), checked
// across a whole simulated cluster after every step, so a broken invariant
// fails at the step that broke it (as LogCabin's RaftConsensusInvariants).
//
//   Election safety:     at most one leader per term.
//   Log matching:        two logs with an entry of the same index and term agree
//                        on that entry and on the term of the entry before it
//                        (which by induction makes the prefixes identical).
//   Leader completeness: a leader's log holds every entry committed before.
//   State machine safety: every node commits and applies the same entry at an
//                        index.
//   Membership:          a leader has at most one uncommitted configuration
//                        entry and stops leading once its removal commits.
//   Commit monotonic:    a node's commit index never decreases (within one
//                        incarnation: an unsynced commit index may be lost in
//                        a crash, which is allowed).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "raft/core/core.h"

namespace ds::raft {

class InvariantChecker {
 public:
  // Checks the live nodes (nullptr entries are crashed nodes and skipped).
  absl::Status Check(const std::vector<const Core*>& nodes);
  // Node `id` restarted from storage: its commit index may have gone back.
  void OnRestart(uint64_t id);
  // Node `id`, in `term`, applied `entry`: it must be the entry committed at
  // that index.
  absl::Status OnApply(uint64_t id, uint64_t term, const pb::Entry& entry);

  // The highest index known committed anywhere.
  uint64_t max_committed() const { return committed_.empty() ? 0 : committed_.rbegin()->first; }

 private:
  struct Seen {
    uint64_t prev_term;  // 0 if unknown (compacted)
    std::string data;
  };
  struct NodeState {
    uint64_t last_commit = 0;
    uint64_t verified_commit = 0;
  };
  absl::Status CheckNode(const Core& node);
  // `observer_term`: the term of the node that saw the entry committed, at
  // least the term of the leader that committed it.
  absl::Status RecordCommitted(uint64_t id, uint64_t observer_term, const pb::Entry& e);

  std::map<uint64_t, uint64_t> leaders_;                          // term -> leader
  std::set<std::pair<uint64_t, uint64_t>> completeness_checked_;  // (id, term)
  struct Committed {
    uint64_t term;  // the entry's
    std::string data;
    uint64_t known_in_term;  // >= the term in which it was committed
  };
  std::map<uint64_t, Committed> committed_;                        // by index
  absl::flat_hash_map<std::pair<uint64_t, uint64_t>, Seen> seen_;  // (index, term)
  std::map<uint64_t, NodeState> nodes_;
};

}  // namespace ds::raft
