#include "shardctrler/rebalance.h"

#include <algorithm>
#include <cstddef>

namespace ds::ctrl {

std::vector<uint64_t> Rebalance(absl::Span<const uint64_t> shards,
                                absl::Span<const uint64_t> gids) {
  // Sorted, unique, nonzero: every later step iterates in gid order, so the
  // result cannot depend on how the caller ordered the groups.
  std::vector<uint64_t> groups(gids.begin(), gids.end());
  std::sort(groups.begin(), groups.end());
  groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
  if (!groups.empty() && groups.front() == 0) groups.erase(groups.begin());

  std::vector<uint64_t> result(shards.size(), 0);
  if (groups.empty()) return result;

  // owned[g]: the shards group g (an index into `groups`) owns now, ascending.
  std::vector<std::vector<size_t>> owned(groups.size());
  std::vector<size_t> pool;  // shards to place, on gid 0 or a departed gid
  for (size_t shard = 0; shard < shards.size(); ++shard) {
    auto it = std::lower_bound(groups.begin(), groups.end(), shards[shard]);
    if (it != groups.end() && *it == shards[shard]) {
      owned[static_cast<size_t>(it - groups.begin())].push_back(shard);
    } else {
      pool.push_back(shard);
    }
  }

  // Targets: q for all, q + 1 for the r groups that own the most now. A group
  // keeps min(owned, target) shards, so giving the larger targets to the
  // largest owners keeps the most shards in place (minimal movement). From a
  // balanced assignment this never raises a current group above what it owns
  // on a join, nor lowers one below it on a leave.
  const size_t q = shards.size() / groups.size();
  const size_t r = shards.size() % groups.size();
  std::vector<size_t> order(groups.size());
  for (size_t g = 0; g < order.size(); ++g) order[g] = g;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (owned[a].size() != owned[b].size()) return owned[a].size() > owned[b].size();
    return a < b;  // index order is gid order
  });
  std::vector<size_t> target(groups.size(), q);
  for (size_t i = 0; i < r; ++i) ++target[order[i]];

  // Groups over target give up their highest-numbered shards.
  for (size_t g = 0; g < groups.size(); ++g) {
    while (owned[g].size() > target[g]) {
      pool.push_back(owned[g].back());
      owned[g].pop_back();
    }
  }
  std::sort(pool.begin(), pool.end());

  // Groups under target take freed shards, lowest shard first, in gid order.
  size_t next = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t shard : owned[g]) result[shard] = groups[g];
    for (size_t n = owned[g].size(); n < target[g]; ++n) result[pool[next++]] = groups[g];
  }
  return result;
}

}  // namespace ds::ctrl
