// The randomized simulation (VOPR-style): one seed drives a whole 3-, 5- or
// 7-node cluster through random loss, delay, reordering, duplication,
// symmetric and asymmetric partitions, crashes that lose unsynced writes,
// restarts, leadership transfers, proposals and ReadIndex requests and, in
// most seeds, membership changes (learners added, promoted, voters added and
// removed, the leader itself removed), with the invariants checked after every event. Then the
// faults heal and the cluster must commit a new proposal on every node within a bounded time.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace ds::raft::sim {

struct RandomSimStats {
  int nodes = 0;
  uint64_t commits = 0;        // highest committed index at the end
  uint64_t reads_checked = 0;  // ReadIndex results checked for linearizability
  uint64_t virtual_ms = 0;
  uint64_t conf_changes = 0;  // membership changes committed
  bool membership = false;    // the run made membership changes
};

struct RandomSimOptions {
  // Membership changes in every seed (by default in about 70% of them).
  bool force_membership = false;
};

// Runs one seed; the status is the first violation (or the lack of progress
// after healing). With verbose, prints the event trace to stdout.
absl::Status RunRandomSim(uint64_t seed, bool verbose, RandomSimStats* stats,
                          const RandomSimOptions& options = {});

// The command that replays one seed.
std::string ReplayCommand(uint64_t seed, const RandomSimOptions& options = {});

}  // namespace ds::raft::sim
