// The randomized simulation (VOPR-style): one seed drives a whole 3-, 5- or
// 7-node cluster through random loss, delay, reordering, duplication,
// symmetric and asymmetric partitions, crashes that lose unsynced writes,
// restarts, leadership transfers, proposals and ReadIndex requests, with the
// invariants checked after every event. Then the faults heal and the cluster
// must commit a new proposal on every node within a bounded time.
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
};

// Runs one seed; the status is the first violation (or the lack of progress
// after healing). With verbose, prints the event trace to stdout.
absl::Status RunRandomSim(uint64_t seed, bool verbose, RandomSimStats* stats);

// The command that replays one seed.
std::string ReplayCommand(uint64_t seed);

}  // namespace ds::raft::sim
