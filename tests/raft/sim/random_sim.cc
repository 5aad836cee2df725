#include "tests/raft/sim/random_sim.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/raft/sim/cluster.h"

namespace ds::raft::sim {

std::string ReplayCommand(uint64_t seed, const RandomSimOptions& options) {
  return absl::StrCat("raft-sim --seed=", seed, options.force_membership ? " --membership" : "",
                      " --verbose");
}

absl::Status RunRandomSim(uint64_t seed, bool verbose, RandomSimStats* stats,
                          const RandomSimOptions& sim_options) {
  Rng rng(seed);
  static constexpr int kSizes[] = {3, 5, 7};
  ClusterOptions o;
  o.nodes = kSizes[rng.Uniform(3)];
  const bool membership = sim_options.force_membership || rng.Chance(700);
  if (membership) {
    // Spare machines that start outside the cluster, to be added.
    o.initial_voters = o.nodes == 7 ? static_cast<int>(rng.Range(1, 5)) : o.nodes;
    if (o.nodes < 7) o.nodes += static_cast<int>(rng.Range(1, 2));
  }
  o.seed = seed;
  o.verbose = verbose;
  // Half the runs compact often, so InstallSnapshot is exercised.
  o.snapshot_interval = rng.Chance(500) ? rng.Range(4, 30) : 0;
  {
    // Half of those keep entries below the snapshot index for laggards
    // (LogRetention). A separate stream, so every seed's other choices and
    // events stay what they were before this option existed.
    Rng keep_rng(seed ^ 0x6b657074u);
    if (o.snapshot_interval > 0 && keep_rng.Chance(500)) {
      o.log_retention.entries = keep_rng.Range(1, 3 * o.snapshot_interval);
      o.log_retention.bytes = keep_rng.Chance(500) ? UINT64_MAX : keep_rng.Range(20, 2000);
    }
  }
  o.raft.pre_vote = rng.Chance(700);
  o.raft.check_quorum = rng.Chance(700);
  // Small windows and messages exercise flow control and paging.
  o.raft.max_inflight_msgs = static_cast<int>(rng.Range(1, 8));
  o.raft.max_inflight_bytes = rng.Chance(300) ? rng.Range(100, 2000) : 0;
  o.raft.max_size_per_msg_bytes = rng.Range(30, 400);
  if (verbose) {
    std::printf(
        "seed %llu: %d nodes, snapshot_interval %llu (keeping %llu entries / %llu bytes), "
        "pre_vote %d, check_quorum %d, "
        "inflight %d msgs / %llu bytes, max msg %llu bytes, membership %d (initial voters "
        "%d)\n",
        static_cast<unsigned long long>(seed), o.nodes,
        static_cast<unsigned long long>(o.snapshot_interval),
        static_cast<unsigned long long>(o.log_retention.entries),
        static_cast<unsigned long long>(o.log_retention.bytes), o.raft.pre_vote,
        o.raft.check_quorum, o.raft.max_inflight_msgs,
        static_cast<unsigned long long>(o.raft.max_inflight_bytes),
        static_cast<unsigned long long>(o.raft.max_size_per_msg_bytes), membership,
        o.initial_voters);
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
  auto in = [](const auto& ids, uint64_t id) {
    return std::find(ids.begin(), ids.end(), id) != ids.end();
  };
  auto is_member = [&](const pb::ConfState& cs, int i) {
    return in(cs.voters(), i + 1) || in(cs.learners(), i + 1);
  };
  // One membership change, proposed at the leader (a stale one too: it must
  // refuse or lose it safely).
  auto change_membership = [&]() {
    const int l = leader();
    if (l < 0) return;
    const pb::ConfState cs = c.core(l)->conf_state();
    std::vector<int> outside, learners, members;
    for (int i = 0; i < n; ++i) {
      if (in(cs.learners(), i + 1)) learners.push_back(i);
      if (is_member(cs, i)) {
        members.push_back(i);
      } else {
        outside.push_back(i);
      }
    }
    pb::ConfChange cc;
    const uint64_t kind = rng.Uniform(100);
    if (kind < 35 && !outside.empty()) {
      // A spare machine (empty disk, no configuration), or a removed one,
      // which the leader must refuse: ids are never reused.
      const int i = outside[rng.Uniform(outside.size())];
      if (!c.alive(i)) c.Restart(i);
      cc.set_type(rng.Chance(750) ? pb::CONF_ADD_LEARNER : pb::CONF_ADD_VOTER);
      cc.set_node_id(i + 1);
    } else if (kind < 60 && !learners.empty()) {
      cc.set_type(pb::CONF_PROMOTE);
      cc.set_node_id(learners[rng.Uniform(learners.size())] + 1);
    } else if (kind < 90 && !members.empty()) {
      cc.set_type(pb::CONF_REMOVE);
      // The leader itself one time in four.
      cc.set_node_id(rng.Chance(250) ? l + 1 : members[rng.Uniform(members.size())] + 1);
    } else {
      // Something invalid: must be refused without effect.
      cc.set_type(static_cast<pb::ConfChangeType>(rng.Uniform(4)));
      cc.set_node_id(rng.Chance(500) ? 0 : rng.Uniform(n) + 1);
    }
    c.ChangeMembership(l, cc).IgnoreError();
  };

  const int rounds = static_cast<int>(rng.Range(20, 60));
  for (int round = 0; round < rounds && c.status().ok(); ++round) {
    const uint64_t action = rng.Uniform(membership ? 115 : 100);
    if (action >= 100) {
      change_membership();
      c.RunFor(rng.Range(10, 800));
      continue;
    }
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
    if (!membership) {
      // One(): a leader within 10 s of virtual time that commits a new entry
      // on every node.
      auto index = c.One(absl::StrCat("final-", seed), n, /*retry=*/true);
      if (!index.ok() && c.status().ok()) {
        return absl::DeadlineExceededError(
            absl::StrCat("no progress after healing: ", index.status().message()));
      }
    } else {
      // Machines outside the committed configuration are shut down, as an
      // operator does with removed ones (a removed replica that missed its
      // removal would keep calling elections without PreVote/CheckQuorum).
      // Kept: the members of the most up-to-date log's committed and newest
      // configurations.
      int best = -1;
      auto newer = [&](int a, int b) {
        const RaftLog& la = c.core(a)->log();
        const RaftLog& lb = c.core(b)->log();
        return la.LastTerm() != lb.LastTerm() ? la.LastTerm() > lb.LastTerm()
                                              : la.LastIndex() > lb.LastIndex();
      };
      for (int i = 0; i < n; ++i) {
        if (c.alive(i) && (best < 0 || newer(i, best))) best = i;
      }
      const pb::ConfState committed = c.core(best)->ConfStateAt(c.core(best)->commit());
      const pb::ConfState newest = c.core(best)->conf_state();
      for (int i = 0; i < n; ++i) {
        if (!is_member(committed, i) && !is_member(newest, i)) c.Crash(i);
      }
      // A leader commits a new entry, and then every member of its
      // configuration applies it.
      auto index = c.One(absl::StrCat("final-", seed), 1, /*retry=*/true);
      if (index.ok()) {
        // The members of a current leader's committed and newest
        // configurations. (Not the most up-to-date log's from before: a
        // configuration entry it had uncommitted may have been replaced
        // since, as seed 58 of --membership found, and its new member then
        // gets nothing.)
        int l = leader();
        for (int k = 0; l < 0 && k < 100 && c.status().ok(); ++k) {
          c.RunFor(100);
          l = leader();
        }
        const Core& lc = *c.core(l >= 0 ? l : best);
        const pb::ConfState now = lc.conf_state();
        const pb::ConfState now_committed = lc.ConfStateAt(lc.commit());
        int members = 0;
        for (int i = 0; i < n; ++i) {
          if (!is_member(now, i) || !is_member(now_committed, i)) continue;
          ++members;
          if (!c.alive(i)) c.Restart(i);
        }
        auto waited = c.Wait(*index, members, 0);
        if (!waited.ok()) index = waited.status();
      }
      if (!index.ok() && c.status().ok()) {
        return absl::DeadlineExceededError(
            absl::StrCat("no progress after healing: ", index.status().message()));
      }
    }
  }
  if (stats != nullptr) {
    stats->nodes = n;
    stats->reads_checked = c.read_states_checked();
    stats->virtual_ms = c.now_ms();
    stats->membership = membership;
    for (int i = 0; i < n; ++i) {
      if (!c.alive(i)) continue;
      stats->commits = std::max(stats->commits, c.core(i)->commit());
      // Configuration entries committed (counted on the most advanced node).
      uint64_t changes = 0;
      for (const auto& [index, cs] : c.core(i)->conf_entries()) {
        if (index <= c.core(i)->commit()) ++changes;
      }
      stats->conf_changes = std::max(stats->conf_changes, changes);
    }
  }
  return c.status();
}

}  // namespace ds::raft::sim
