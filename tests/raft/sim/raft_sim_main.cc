// raft-sim: runs the randomized Raft simulation for one seed (with an event
// trace) or a range of seeds, and prints the replay command of any failure.
#include <cstdio>

#include "absl/flags/flag.h"
#include "common/init.h"
#include "tests/raft/sim/random_sim.h"

ABSL_FLAG(uint64_t, seed, 1, "First seed to simulate.");
ABSL_FLAG(uint64_t, seeds, 1, "Number of consecutive seeds to simulate, from --seed.");
ABSL_FLAG(bool, membership, false,
          "Make membership changes in every seed (by default about 70% of the seeds do).");
ABSL_FLAG(bool, verbose, false, "Print every simulated event (use with one seed).");

int main(int argc, char** argv) {
  ds::common::InitProcess(
      argc, argv,
      "raft-sim: deterministic randomized simulation of a Raft cluster (faults, crashes, "
      "partitions) with invariant checks after every event. A seed replays exactly.");
  const uint64_t first = absl::GetFlag(FLAGS_seed);
  const uint64_t count = absl::GetFlag(FLAGS_seeds);
  int failures = 0;
  ds::raft::sim::RandomSimOptions options;
  options.force_membership = absl::GetFlag(FLAGS_membership);
  for (uint64_t seed = first; seed < first + count; ++seed) {
    ds::raft::sim::RandomSimStats stats;
    absl::Status s =
        ds::raft::sim::RunRandomSim(seed, absl::GetFlag(FLAGS_verbose), &stats, options);
    if (!s.ok()) {
      ++failures;
      std::printf("seed %llu FAILED: %s\n  replay: %s\n", static_cast<unsigned long long>(seed),
                  std::string(s.message()).c_str(),
                  ds::raft::sim::ReplayCommand(seed, options).c_str());
    } else if (count == 1 || absl::GetFlag(FLAGS_verbose)) {
      std::printf(
          "seed %llu ok: %d nodes, commit %llu, %llu conf changes, %llu reads checked, %llu "
          "virtual ms\n",
          static_cast<unsigned long long>(seed), stats.nodes,
          static_cast<unsigned long long>(stats.commits),
          static_cast<unsigned long long>(stats.conf_changes),
          static_cast<unsigned long long>(stats.reads_checked),
          static_cast<unsigned long long>(stats.virtual_ms));
    }
  }
  if (count > 1)
    std::printf("%d of %llu seeds failed\n", failures, static_cast<unsigned long long>(count));
  return failures == 0 ? 0 : 1;
}
