#include "tests/raft/sim/random_sim.h"

#include <cstdio>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/raft/sim/cluster.h"

namespace ds::raft::sim {

std::string ReplayCommand(uint64_t seed) {
  return absl::StrCat("raft-sim --seed=", seed, " --verbose");
}

absl::Status RunRandomSim(uint64_t seed, bool verbose, RandomSimStats* stats) {
  Rng rng(seed);
  static constexpr int kSizes[] = {3, 5, 7};
  ClusterOptions o;
  o.nodes = kSizes[rng.Uniform(3)];
  o.seed = seed;
  o.verbose = verbose;
  // Half the runs compact often, so InstallSnapshot is exercised.
  o.snapshot_interval = rng.Chance(500) ? rng.Range(4, 30) : 0;
  o.raft.pre_vote = rng.Chance(700);
  o.raft.check_quorum = rng.Chance(700);
  // Small windows and messages exercise flow control and paging.
  o.raft.max_inflight_msgs = static_cast<int>(rng.Range(1, 8));
  o.raft.max_inflight_bytes = rng.Chance(300) ? rng.Range(100, 2000) : 0;
  o.raft.max_size_per_msg_bytes = rng.Range(30, 400);
  if (verbose) {
    std::printf(
        "seed %llu: %d nodes, snapshot_interval %llu, pre_vote %d, check_quorum %d, "
        "inflight %d msgs / %llu bytes, max msg %llu bytes\n",
        static_cast<unsigned long long>(seed), o.nodes,
        static_cast<unsigned long long>(o.snapshot_interval), o.raft.pre_vote, o.raft.check_quorum,
        o.raft.max_inflight_msgs, static_cast<unsigned long long>(o.raft.max_inflight_bytes),
        static_cast<unsigned long long>(o.raft.max_size_per_msg_bytes));
  }
  Cluster c(o);
  const int n = o.nodes;
  uint64_t next_command = 0;
  uint64_t next_read = 0;
  auto leader = [&]() {
    int best = -1;
    uint64_t best_term = 0;
    for (int i = 0; i < n; ++i) {
      auto [term, is_leader] = c.GetState(i);
      if (is_leader && term >= best_term) best = i, best_term = term;
    }
    return best;
  };
  auto random_node = [&]() { return static_cast<int>(rng.Uniform(n)); };

  const int rounds = static_cast<int>(rng.Range(20, 60));
  for (int round = 0; round < rounds && c.status().ok(); ++round) {
    const uint64_t action = rng.Uniform(100);
    if (action < 30) {
      // Client proposals, to the leader if there is one (else anywhere).
      int target = leader();
      if (target < 0 || rng.Chance(200)) target = random_node();
      const int count = static_cast<int>(rng.Range(1, 5));
      for (int k = 0; k < count; ++k) {
        c.Start(target,
                absl::StrCat("cmd-", seed, "-", next_command++, std::string(rng.Uniform(40), 'x')));
      }
    } else if (action < 42) {
      // Reads go to any node that believes it leads, stale leaders included:
      // those are the ones that could serve a stale read.
      std::vector<int> leaders;
      for (int i = 0; i < n; ++i) {
        if (c.GetState(i).second) leaders.push_back(i);
      }
      int target = leaders.empty() ? random_node() : leaders[rng.Uniform(leaders.size())];
      if (rng.Chance(100)) target = random_node();
      c.ReadIndex(target, absl::StrCat("read-", next_read++));
    } else if (action < 50) {
      // Symmetric partition into two random groups.
      std::vector<bool> side(n);
      for (int i = 0; i < n; ++i) side[i] = rng.Chance(500);
      for (int a = 0; a < n; ++a) {
        for (int b = 0; b < n; ++b) {
          if (side[a] != side[b]) c.BlockLink(a, b, true);
        }
      }
    } else if (action < 56) {
      // Asymmetric: one direction of one link.
      const int a = random_node(), b = random_node();
      if (a != b) c.BlockLink(a, b, true);
    } else if (action < 62) {
      c.Disconnect(random_node());
    } else if (action < 72) {
      c.HealLinks();
      for (int i = 0; i < n; ++i) c.Connect(i);
    } else if (action < 80) {
      c.Crash(random_node());
    } else if (action < 88) {
      const int i = random_node();
      if (!c.alive(i)) c.Restart(i);
    } else if (action < 92) {
      const int l = leader();
      if (l >= 0) c.TransferLeadership(l, random_node());
    } else {
      // Change the network's quality.
      c.faults().reliable = rng.Chance(500);
      c.faults().duplicate_per_mille = rng.Chance(300) ? 50 : 0;
      c.faults().long_reordering = rng.Chance(200);
      c.faults().max_delay_ms = rng.Range(1, 30);
    }
    c.RunFor(rng.Range(10, 800));
  }
  if (c.status().ok()) {
    // Heal everything; the cluster must then make progress.
    if (verbose) std::printf("---- heal ----\n");
    c.HealLinks();
    c.faults() = NetworkFaults{};
    for (int i = 0; i < n; ++i) {
      c.Connect(i);
      if (!c.alive(i)) c.Restart(i);
    }
    // One(): a leader within 10 s of virtual time that commits a new entry
    // on every node.
    auto index = c.One(absl::StrCat("final-", seed), n, /*retry=*/true);
    if (!index.ok() && c.status().ok()) {
      return absl::DeadlineExceededError(
          absl::StrCat("no progress after healing: ", index.status().message()));
    }
  }
  if (stats != nullptr) {
    stats->nodes = n;
    stats->reads_checked = c.read_states_checked();
    stats->virtual_ms = c.now_ms();
    for (int i = 0; i < n; ++i) {
      if (c.alive(i)) stats->commits = std::max(stats->commits, c.core(i)->commit());
    }
  }
  return c.status();
}

}  // namespace ds::raft::sim
