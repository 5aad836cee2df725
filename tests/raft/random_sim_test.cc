// The randomized simulation over many seeds. Each failure names its seed and
// the command that replays it with an event trace. The seed ranges are split
// into separate ctest tests so they run in parallel.
#include "tests/raft/sim/random_sim.h"
#include "gtest/gtest.h"

namespace ds::raft::sim {
namespace {

void RunSeeds(uint64_t first, uint64_t count, RandomSimOptions options = {}) {
  int failures = 0;
  uint64_t reads = 0, commits = 0, conf_changes = 0, membership_runs = 0;
  for (uint64_t seed = first; seed < first + count; ++seed) {
    RandomSimStats stats;
    absl::Status s = RunRandomSim(seed, /*verbose=*/false, &stats, options);
    reads += stats.reads_checked;
    commits += stats.commits;
    conf_changes += stats.conf_changes;
    membership_runs += stats.membership ? 1 : 0;
    if (!s.ok()) {
      ADD_FAILURE() << "seed " << seed << ": " << s
                    << "\n  replay: " << ReplayCommand(seed, options);
      if (++failures >= 5) return;  // enough to debug; keep the output short
    }
  }
  // The runs must actually exercise the protocol, not pass vacuously.
  EXPECT_GT(commits, count * 5);
  EXPECT_GT(reads, count / 2);
  // Membership changes happen in most runs, and commit.
  EXPECT_GT(membership_runs, options.force_membership ? count - 1 : count / 2);
  EXPECT_GT(conf_changes, membership_runs);
}

// A seed is the whole run: replaying it reproduces it exactly (what makes
// `raft-sim --seed=N --verbose` useful).
TEST(RaftRandomSim, SameSeedReplaysExactly) {
  for (uint64_t seed : {7u, 42u, 1234u}) {
    RandomSimStats a, b;
    ASSERT_TRUE(RunRandomSim(seed, false, &a).ok());
    ASSERT_TRUE(RunRandomSim(seed, false, &b).ok());
    EXPECT_EQ(a.nodes, b.nodes);
    EXPECT_EQ(a.commits, b.commits);
    EXPECT_EQ(a.reads_checked, b.reads_checked);
    EXPECT_EQ(a.virtual_ms, b.virtual_ms);
  }
}

TEST(RaftRandomSim, Seeds1To1000) { RunSeeds(1, 1000); }
TEST(RaftRandomSim, Seeds1001To2000) { RunSeeds(1001, 1000); }
// Membership changes in every seed (the runs above make them in about 70%).
TEST(RaftRandomSim, MembershipSeeds1To1000) { RunSeeds(1, 1000, {.force_membership = true}); }

}  // namespace
}  // namespace ds::raft::sim
