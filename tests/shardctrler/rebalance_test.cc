// The rebalancer as a pure function: golden cases for the tie-breaks, then
// property tests over thousands of random join/leave/move sequences (balance,
// minimal movement, direction of movement, determinism). A failing sequence
// prints its seed and the operations up to the failure.
#include "shardctrler/rebalance.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "raft/core/rng.h"

namespace ds::ctrl {
namespace {

using Shards = std::vector<uint64_t>;
using Gids = std::vector<uint64_t>;

// Shards per group, in the order of `gids` (0 for a group without shards).
// Plain vectors: at -O0 a btree here costs more than the rebalancer itself.
std::vector<int> Counts(const Shards& shards, const Gids& gids) {
  std::vector<int> counts(gids.size(), 0);
  for (uint64_t owner : shards) {
    auto it = std::find(gids.begin(), gids.end(), owner);
    if (it != gids.end()) ++counts[static_cast<size_t>(it - gids.begin())];
  }
  return counts;
}

// Every shard on a group of `gids` (on gid 0 if there is none), and the
// groups' shard counts differ by at most one.
bool IsBalanced(const Shards& shards, const Gids& gids) {
  for (uint64_t owner : shards) {
    if (gids.empty() ? owner != 0 : std::find(gids.begin(), gids.end(), owner) == gids.end()) {
      return false;
    }
  }
  if (gids.empty()) return true;
  const std::vector<int> counts = Counts(shards, gids);
  const auto [lo, hi] = std::minmax_element(counts.begin(), counts.end());
  return *hi - *lo <= 1;
}

// The fewest shards that must move to balance `shards` over `gids`, computed
// apart from the rebalancer: with q = S / G and r = S % G, each group can keep
// up to q shards, and r of them one more; at most r groups owning more than q
// can use that extra place.
int MinimumMoves(const Shards& shards, const Gids& gids) {
  const int s = static_cast<int>(shards.size());
  if (gids.empty()) {
    return static_cast<int>(
        std::count_if(shards.begin(), shards.end(), [](uint64_t gid) { return gid != 0; }));
  }
  const int g = static_cast<int>(gids.size());
  const int q = s / g, r = s % g;
  int kept = 0, above = 0;
  for (int n : Counts(shards, gids)) {
    kept += std::min(n, q);
    if (n > q) ++above;
  }
  return s - kept - std::min(r, above);
}

int Moved(const Shards& before, const Shards& after) {
  int moved = 0;
  for (size_t i = 0; i < before.size(); ++i) moved += before[i] != after[i];
  return moved;
}

std::string Show(const Shards& shards) {
  return absl::StrCat("[", absl::StrJoin(shards, " "), "]");
}

TEST(Rebalance, NoGroupsUnassignsEveryShard) {
  EXPECT_EQ(Rebalance(Shards{1, 2, 3, 1}, {}), (Shards{0, 0, 0, 0}));
  EXPECT_EQ(Rebalance(Shards{1, 2, 3, 1}, {0}), (Shards{0, 0, 0, 0})) << "gid 0 is not a group";
}

TEST(Rebalance, FirstGroupGetsEveryShard) {
  EXPECT_EQ(Rebalance(Shards(10, 0), {7}), Shards(10, 7));
}

// The tie-breaks, spelled out: the larger targets go to the largest owners
// (then the smaller gid), an over-target group gives up its highest shards,
// and freed shards go in shard order to groups in gid order.
TEST(Rebalance, GoldenSequenceOfJoins) {
  Shards shards(10, 0);
  shards = Rebalance(shards, {1});
  shards = Rebalance(shards, {1, 2});
  EXPECT_EQ(shards, (Shards{1, 1, 1, 1, 1, 2, 2, 2, 2, 2}));
  shards = Rebalance(shards, {1, 2, 3});
  EXPECT_EQ(shards, (Shards{1, 1, 1, 1, 3, 2, 2, 2, 3, 3}));
  shards = Rebalance(shards, {2, 3});  // 1 leaves: its 4 shards go 2 to each
  EXPECT_EQ(shards, (Shards{2, 2, 3, 3, 3, 2, 2, 2, 3, 3}));
}

TEST(Rebalance, MoreGroupsThanShardsLeavesSomeGroupsEmpty) {
  const Shards shards = Rebalance(Shards(3, 0), {5, 4, 3, 2, 1});
  EXPECT_EQ(shards, (Shards{1, 2, 3}));
  // A sixth group takes nothing: the assignment is already balanced.
  EXPECT_EQ(Rebalance(shards, {1, 2, 3, 4, 5, 6}), shards);
  // The owner of shard 1 leaves: one of the empty groups (the smallest gid) takes it.
  EXPECT_EQ(Rebalance(shards, {1, 3, 4, 5, 6}), (Shards{1, 4, 3}));
}

TEST(Rebalance, RestoresBalanceAfterMovesWithMinimalMovement) {
  // Moves left group 1 with everything; balance over {1, 2} needs 5 to move.
  const Shards shards(10, 1);
  const Shards after = Rebalance(shards, {1, 2});
  EXPECT_TRUE(IsBalanced(after, {1, 2}));
  EXPECT_EQ(Moved(shards, after), 5);
  // Already balanced: nothing moves.
  EXPECT_EQ(Rebalance(after, {1, 2}), after);
}

TEST(Rebalance, ResultDoesNotDependOnGidOrderOrRepeats) {
  const Shards shards{3, 3, 3, 9, 9, 0, 4, 4, 4, 4};
  const Shards expected = Rebalance(shards, {1, 3, 4, 9});
  EXPECT_EQ(Rebalance(shards, {9, 4, 3, 1}), expected);
  EXPECT_EQ(Rebalance(shards, {4, 1, 9, 3, 1, 0, 9}), expected);
}

// Checks one join or leave: `before` over the old groups became `after` over
// `next`; `changed` are the joining or leaving gids.
void CheckStep(const Shards& before, const Gids& next, const Gids& changed, bool join,
               const Shards& after, raft::Rng& rng) {
  ASSERT_EQ(after.size(), before.size());
  ASSERT_TRUE(IsBalanced(after, next)) << "not balanced over {" << absl::StrJoin(next, ",") << "}";
  ASSERT_EQ(Moved(before, after), MinimumMoves(before, next)) << "not a minimal movement";
  // The groups before the change: `next` minus the joiners, or plus the leavers.
  Gids old_gids = next;
  if (join) {
    old_gids.erase(std::remove_if(old_gids.begin(), old_gids.end(),
                                  [&](uint64_t g) {
                                    return std::find(changed.begin(), changed.end(), g) !=
                                           changed.end();
                                  }),
                   old_gids.end());
  } else {
    old_gids.insert(old_gids.end(), changed.begin(), changed.end());
  }
  if (IsBalanced(before, old_gids)) {
    for (size_t i = 0; i < before.size(); ++i) {
      if (before[i] == after[i]) continue;
      const uint64_t side = join ? after[i] : before[i];
      ASSERT_TRUE(std::find(changed.begin(), changed.end(), side) != changed.end())
          << "shard " << i << " moved " << before[i] << "->" << after[i] << " though "
          << (join ? "only joiners may receive" : "only leavers may give");
    }
  }
  // Determinism: sorted input, a shuffled copy with repeats and gid 0.
  ASSERT_EQ(Rebalance(before, next), after) << "depends on the gid order";
  Gids shuffled = next;
  for (size_t i = shuffled.size(); i > 1; --i) std::swap(shuffled[i - 1], shuffled[rng.Uniform(i)]);
  if (!shuffled.empty()) shuffled.push_back(shuffled.front());
  shuffled.push_back(0);
  ASSERT_EQ(Rebalance(before, shuffled), after) << "depends on the gid order or repeats";
}

// One random history: joins (one or several groups, gids drawn from a small
// universe so that they re-join after leaving and sometimes outnumber the
// shards), leaves (one or several, sometimes all), moves. After every join and
// leave the assignment must be balanced, moved minimally, in the right
// direction when it started balanced, and the same whatever the gid order.
void RunSequence(uint64_t seed) {
  raft::Rng rng(seed);
  // Mostly the lab's 10 shards; sometimes few (more groups than shards) or many.
  const int shard_count = static_cast<int>(rng.Chance(500)   ? 10
                                           : rng.Chance(500) ? rng.Range(1, 6)
                                                             : rng.Range(7, 64));
  const uint64_t universe = rng.Range(2, 24);
  Shards shards(shard_count, 0);
  Gids gids;  // current groups, sorted
  std::vector<std::string> trace;

  const int steps = static_cast<int>(rng.Range(10, 40));
  for (int step = 0; step < steps; ++step) {
    Gids absent;
    for (uint64_t gid = 1; gid <= universe; ++gid) {
      if (!std::binary_search(gids.begin(), gids.end(), gid)) absent.push_back(gid);
    }
    const uint64_t kind = rng.Uniform(10);  // 0-4 join, 5-7 leave, 8-9 move
    Gids changed;                           // joining or leaving gids
    bool join = false;
    if (kind < 5 && !absent.empty()) {
      join = true;
      const uint64_t n = rng.Range(1, std::min<uint64_t>(absent.size(), 4));
      for (uint64_t i = 0; i < n; ++i) {
        const size_t pick = rng.Uniform(absent.size());
        changed.push_back(absent[pick]);
        absent.erase(absent.begin() + static_cast<std::ptrdiff_t>(pick));
      }
    } else if (kind < 8 && !gids.empty()) {
      Gids pool = gids;
      const uint64_t n =
          rng.Chance(100) ? pool.size() : rng.Range(1, std::min<uint64_t>(pool.size(), 3));
      for (uint64_t i = 0; i < n; ++i) {
        const size_t pick = rng.Uniform(pool.size());
        changed.push_back(pool[pick]);
        pool.erase(pool.begin() + static_cast<std::ptrdiff_t>(pick));
      }
    } else if (!gids.empty()) {
      const size_t shard = rng.Uniform(shards.size());
      const uint64_t gid = gids[rng.Uniform(gids.size())];
      shards[shard] = gid;
      trace.push_back(absl::StrCat("move ", shard, "->", gid, " => ", Show(shards)));
      continue;
    } else {
      continue;
    }

    Gids next = gids;
    if (join) {
      next.insert(next.end(), changed.begin(), changed.end());
    } else {
      next.erase(std::remove_if(next.begin(), next.end(),
                                [&](uint64_t g) {
                                  return std::find(changed.begin(), changed.end(), g) !=
                                         changed.end();
                                }),
                 next.end());
    }
    std::sort(next.begin(), next.end());
    // The caller's order: the drawn order of the changed gids, appended.
    Gids given = gids;
    given.insert(given.end(), changed.begin(), changed.end());
    if (!join) given = next;
    std::reverse(given.begin(), given.end());

    const Shards after = Rebalance(shards, given);
    trace.push_back(
        absl::StrCat(join ? "join " : "leave ", absl::StrJoin(changed, ","), " => ", Show(after)));
    CheckStep(shards, next, changed, join, after, rng);
    if (::testing::Test::HasFatalFailure()) {
      ADD_FAILURE() << "seed " << seed << ", " << shard_count << " shards, history:\n  "
                    << absl::StrJoin(trace, "\n  ");
      return;
    }
    shards = after;
    gids = next;
  }
}

TEST(Rebalance, RandomSequencesStayBalancedMoveMinimallyAndAreDeterministic) {
  for (uint64_t seed = 1; seed <= 2000; ++seed) {
    RunSequence(seed);
    if (::testing::Test::HasFailure()) return;  // RunSequence printed the seed
  }
}

}  // namespace
}  // namespace ds::ctrl
