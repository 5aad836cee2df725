// The shard controller's rebalancer: a pure, deterministic function from the
// previous assignment (shard -> gid) and the new set of groups to the new
// assignment. Called after every Join and Leave (Move does not rebalance).
//
// The rule, with S shards, G groups, q = S / G and r = S % G:
//   1. Every group's target is q or q + 1; the r targets of q + 1 go to the
//      groups that own the most shards now (ties: smaller gid first). This
//      maximizes the shards that can stay where they are.
//   2. A shard stays if its group is in the set and under its target; a group
//      over its target gives up its highest-numbered shards.
//   3. The freed shards (and those on gid 0 or on a departed gid), in shard
//      order, fill the groups under their targets, in gid order.
//   4. No groups: every shard goes to gid 0.
// So counts differ by at most one, exactly the minimum number of shards move,
// and from a balanced assignment shards move only to joining groups (join) or
// only away from leaving groups (leave).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace ds::ctrl {

// The new assignment of `shards.size()` shards to `gids`. `shards[i]` is the
// gid that owns shard i now (0 or a gid not in `gids`: the shard must move).
// `gids` may come in any order and may repeat; gid 0 is ignored. The result
// depends only on the set of gids, never on their order.
std::vector<uint64_t> Rebalance(absl::Span<const uint64_t> shards, absl::Span<const uint64_t> gids);

}  // namespace ds::ctrl
