// 6.824 lab 2A (leader election) and 2B (log replication) scenarios, in
// virtual time. Names keep the 6.824 stems. One difference from 6.824: a new
// leader appends an empty entry of its term (Raft §8), so Raft indexes count
// those no-op entries too, and expected indexes are stated relative to them.
#include <cstdio>
#include <set>

#include "tests/raft/sim/test_util.h"

namespace ds::raft::sim {
namespace {

TEST(Raft2A, InitialElection) {
  Cluster c(ScenarioOptions(3, 1));
  int leader;
  SIM_ASSIGN_OR_FAIL(leader, c.CheckOneLeader());
  (void)leader;
  c.RunFor(50);
  uint64_t term1;
  SIM_ASSIGN_OR_FAIL(term1, c.CheckTerms());
  EXPECT_GE(term1, 1u);
  // Without failures the term must stay put (6.824 only warns; we require it).
  c.RunFor(2000);
  uint64_t term2;
  SIM_ASSIGN_OR_FAIL(term2, c.CheckTerms());
  EXPECT_EQ(term1, term2);
  SIM_ASSERT_OK(c.CheckOneLeader().status());
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2A, ReElection) {
  Cluster c(ScenarioOptions(3, 2));
  int leader1;
  SIM_ASSIGN_OR_FAIL(leader1, c.CheckOneLeader());
  c.Disconnect(leader1);
  int leader2;
  SIM_ASSIGN_OR_FAIL(leader2, c.CheckOneLeader());
  // The old leader rejoining must not disturb the new one.
  c.Connect(leader1);
  SIM_ASSIGN_OR_FAIL(leader2, c.CheckOneLeader());
  // Without a quorum, no leader.
  c.Disconnect(leader2);
  c.Disconnect((leader2 + 1) % 3);
  c.RunFor(2000);
  SIM_ASSERT_OK(c.CheckNoLeader());
  c.Connect((leader2 + 1) % 3);
  SIM_ASSERT_OK(c.CheckOneLeader().status());
  c.Connect(leader2);
  SIM_ASSERT_OK(c.CheckOneLeader().status());
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2A, ManyElections) {
  Cluster c(ScenarioOptions(7, 3));
  SIM_ASSERT_OK(c.CheckOneLeader().status());
  for (int iter = 0; iter < 10; ++iter) {
    const int i1 = c.rng().Uniform(7), i2 = c.rng().Uniform(7), i3 = c.rng().Uniform(7);
    c.Disconnect(i1);
    c.Disconnect(i2);
    c.Disconnect(i3);
    // Either the current leader is still alive, or the remaining four elect one.
    SIM_ASSERT_OK(c.CheckOneLeader().status());
    c.Connect(i1);
    c.Connect(i2);
    c.Connect(i3);
  }
  SIM_ASSERT_OK(c.CheckOneLeader().status());
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2B, BasicAgree) {
  Cluster c(ScenarioOptions(3, 4));
  SIM_ASSERT_OK(c.CheckOneLeader().status());
  // Index 1 holds the first leader's no-op entry.
  for (uint64_t index = 2; index <= 4; ++index) {
    std::string got;
    ASSERT_EQ(c.NCommitted(index, &got), 0) << "some have committed before Start()";
    uint64_t xindex;
    SIM_ASSIGN_OR_FAIL(xindex, c.One(std::to_string(index * 100), 3, false));
    EXPECT_EQ(xindex, index);
  }
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2B, RPCBytes) {
  Cluster c(ScenarioOptions(3, 5));
  SIM_ASSERT_OK(c.One("99", 3, false).status());
  const uint64_t bytes0 = c.TotalBytes();
  uint64_t sent = 0;
  for (int i = 0; i < 10; ++i) {
    std::string cmd(5000, 'a' + i);
    SIM_ASSERT_OK(c.One(cmd, 3, false).status());
    sent += cmd.size();
  }
  const uint64_t got = c.TotalBytes() - bytes0;
  std::printf("RPCBytes: %llu bytes on the wire for %llu bytes of commands\n",
              static_cast<unsigned long long>(got), static_cast<unsigned long long>(sent));
  // Each command crosses the network about once per follower.
  EXPECT_LE(got, 3 * sent + 50000) << "too many RPC bytes";
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2B, FollowerFailure) {
  Cluster c(ScenarioOptions(3, 6));
  SIM_ASSERT_OK(c.One("101", 3, false).status());
  int leader1;
  SIM_ASSIGN_OR_FAIL(leader1, c.CheckOneLeader());
  c.Disconnect((leader1 + 1) % 3);
  SIM_ASSERT_OK(c.One("102", 2, false).status());
  c.RunFor(1000);
  SIM_ASSERT_OK(c.One("103", 2, false).status());
  int leader2;
  SIM_ASSIGN_OR_FAIL(leader2, c.CheckOneLeader());
  c.Disconnect((leader2 + 1) % 3);
  c.Disconnect((leader2 + 2) % 3);
  auto r = c.Start(leader2, "104");
  ASSERT_TRUE(r.is_leader);
  c.RunFor(2000);
  std::string got;
  EXPECT_EQ(c.NCommitted(r.index, &got), 0) << r.index << " committed but no majority";
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2B, LeaderFailure) {
  Cluster c(ScenarioOptions(3, 7));
  SIM_ASSERT_OK(c.One("101", 3, false).status());
  int leader1;
  SIM_ASSIGN_OR_FAIL(leader1, c.CheckOneLeader());
  c.Disconnect(leader1);
  SIM_ASSERT_OK(c.One("102", 2, false).status());
  c.RunFor(1000);
  SIM_ASSERT_OK(c.One("103", 2, false).status());
  int leader2;
  SIM_ASSIGN_OR_FAIL(leader2, c.CheckOneLeader());
  c.Disconnect(leader2);
  std::set<uint64_t> indexes;
  for (int i = 0; i < 3; ++i) {
    auto r = c.Start(i, "104");
    if (r.is_leader) indexes.insert(r.index);
  }
  c.RunFor(2000);
  for (uint64_t index : indexes) {
    std::string got;
    EXPECT_EQ(c.NCommitted(index, &got), 0) << index << " committed but no majority";
  }
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2B, FailAgree) {
  Cluster c(ScenarioOptions(3, 8));
  SIM_ASSERT_OK(c.One("101", 3, false).status());
  int leader;
  SIM_ASSIGN_OR_FAIL(leader, c.CheckOneLeader());
  c.Disconnect((leader + 1) % 3);
  for (int cmd = 102; cmd <= 105; ++cmd) {
    SIM_ASSERT_OK(c.One(std::to_string(cmd), 2, false).status());
    if (cmd < 105) c.RunFor(1000);
  }
  c.Connect((leader + 1) % 3);
  SIM_ASSERT_OK(c.One("106", 3, true).status());
  c.RunFor(1000);
  SIM_ASSERT_OK(c.One("107", 3, true).status());
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2B, FailNoAgree) {
  Cluster c(ScenarioOptions(5, 9));
  uint64_t index1;
  SIM_ASSIGN_OR_FAIL(index1, c.One("10", 5, false));
  int leader;
  SIM_ASSIGN_OR_FAIL(leader, c.CheckOneLeader());
  for (int k = 1; k <= 3; ++k) c.Disconnect((leader + k) % 5);
  auto r = c.Start(leader, "20");
  ASSERT_TRUE(r.is_leader);
  EXPECT_EQ(r.index, index1 + 1);
  c.RunFor(2000);
  std::string got;
  EXPECT_EQ(c.NCommitted(r.index, &got), 0) << r.index << " committed but no majority";
  for (int k = 1; k <= 3; ++k) c.Connect((leader + k) % 5);
  int leader2;
  SIM_ASSIGN_OR_FAIL(leader2, c.CheckOneLeader());
  auto r2 = c.Start(leader2, "30");
  ASSERT_TRUE(r2.is_leader);
  // The uncommitted entry may survive or be replaced; a new leader's no-op
  // takes one more index.
  EXPECT_GE(r2.index, index1 + 1);
  EXPECT_LE(r2.index, index1 + 3);
  SIM_ASSERT_OK(c.One("1000", 5, true).status());
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2B, ConcurrentStarts) {
  Cluster c(ScenarioOptions(3, 10));
  bool success = false;
  for (int attempt = 0; attempt < 5 && !success; ++attempt) {
    if (attempt > 0) c.RunFor(3000);
    int leader;
    SIM_ASSIGN_OR_FAIL(leader, c.CheckOneLeader());
    auto r0 = c.Start(leader, "1");
    if (!r0.is_leader) continue;
    std::vector<uint64_t> indexes;
    for (int i = 0; i < 5; ++i) {
      auto r = c.Start(leader, std::to_string(100 + i));
      if (r.is_leader && r.term == r0.term) indexes.push_back(r.index);
    }
    if (indexes.size() != 5) continue;
    std::set<std::string> cmds;
    bool term_changed = false;
    for (uint64_t index : indexes) {
      std::optional<std::string> cmd;
      SIM_ASSIGN_OR_FAIL(cmd, c.Wait(index, 3, r0.term));
      if (!cmd) {
        term_changed = true;
        break;
      }
      cmds.insert(*cmd);
    }
    if (term_changed) continue;
    for (int i = 0; i < 5; ++i) {
      EXPECT_TRUE(cmds.count(std::to_string(100 + i))) << "cmd " << 100 + i << " missing";
    }
    success = true;
  }
  EXPECT_TRUE(success) << "term changed too often";
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2B, Rejoin) {
  Cluster c(ScenarioOptions(3, 11));
  SIM_ASSERT_OK(c.One("101", 3, true).status());
  int leader1;
  SIM_ASSIGN_OR_FAIL(leader1, c.CheckOneLeader());
  c.Disconnect(leader1);
  c.Start(leader1, "102");
  c.Start(leader1, "103");
  c.Start(leader1, "104");
  SIM_ASSERT_OK(c.One("103", 2, true).status());
  int leader2;
  SIM_ASSIGN_OR_FAIL(leader2, c.CheckOneLeader());
  c.Disconnect(leader2);
  c.Connect(leader1);
  SIM_ASSERT_OK(c.One("104", 2, true).status());
  c.Connect(leader2);
  SIM_ASSERT_OK(c.One("105", 3, true).status());
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2B, Backup) {
  Cluster c(ScenarioOptions(5, 12));
  SIM_ASSERT_OK(c.One(RandCommand(c), 5, true).status());
  int leader1;
  SIM_ASSIGN_OR_FAIL(leader1, c.CheckOneLeader());
  c.Disconnect((leader1 + 2) % 5);
  c.Disconnect((leader1 + 3) % 5);
  c.Disconnect((leader1 + 4) % 5);
  for (int i = 0; i < 50; ++i) c.Start(leader1, RandCommand(c));
  c.RunFor(500);
  c.Disconnect((leader1 + 0) % 5);
  c.Disconnect((leader1 + 1) % 5);
  c.Connect((leader1 + 2) % 5);
  c.Connect((leader1 + 3) % 5);
  c.Connect((leader1 + 4) % 5);
  for (int i = 0; i < 50; ++i) SIM_ASSERT_OK(c.One(RandCommand(c), 3, true).status());
  int leader2;
  SIM_ASSIGN_OR_FAIL(leader2, c.CheckOneLeader());
  int other = (leader1 + 2) % 5;
  if (leader2 == other) other = (leader2 + 1) % 5;
  c.Disconnect(other);
  for (int i = 0; i < 50; ++i) c.Start(leader2, RandCommand(c));
  c.RunFor(500);
  for (int i = 0; i < 5; ++i) c.Disconnect(i);
  c.Connect((leader1 + 0) % 5);
  c.Connect((leader1 + 1) % 5);
  c.Connect(other);
  for (int i = 0; i < 50; ++i) SIM_ASSERT_OK(c.One(RandCommand(c), 3, true).status());
  for (int i = 0; i < 5; ++i) c.Connect(i);
  SIM_ASSERT_OK(c.One(RandCommand(c), 5, true).status());
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2B, Count) {
  Cluster c(ScenarioOptions(3, 13));
  int leader;
  SIM_ASSIGN_OR_FAIL(leader, c.CheckOneLeader());
  const uint64_t election_rpcs = c.TotalRpcs();
  EXPECT_GE(election_rpcs, 1u);
  EXPECT_LE(election_rpcs, 30u) << "too many RPCs to elect initial leader";

  bool success = false;
  uint64_t total2 = 0, entries_rpcs = 0;
  for (int attempt = 0; attempt < 5 && !success; ++attempt) {
    if (attempt > 0) c.RunFor(3000);
    SIM_ASSIGN_OR_FAIL(leader, c.CheckOneLeader());
    const uint64_t total1 = c.TotalRpcs();
    auto r0 = c.Start(leader, "1");
    if (!r0.is_leader) continue;
    const int iters = 10;
    std::vector<std::string> cmds;
    bool failed = false;
    for (int i = 1; i < iters + 2; ++i) {
      cmds.push_back(RandCommand(c));
      auto r = c.Start(leader, cmds.back());
      if (r.term != r0.term || !r.is_leader) {
        failed = true;
        break;
      }
      ASSERT_EQ(r.index, r0.index + i) << "Start() failed";
    }
    if (failed) continue;
    for (int i = 1; i < iters + 1; ++i) {
      std::optional<std::string> cmd;
      SIM_ASSIGN_OR_FAIL(cmd, c.Wait(r0.index + i, 3, r0.term));
      if (!cmd) {
        failed = true;
        break;
      }
      ASSERT_EQ(*cmd, cmds[i - 1]) << "wrong value committed for index " << r0.index + i;
    }
    if (failed || c.GetState(leader).first != r0.term) continue;
    total2 = c.TotalRpcs();
    entries_rpcs = total2 - total1;
    EXPECT_LE(total2 - total1, (iters + 1 + 3) * 3u) << "too many RPCs for " << iters << " entries";
    success = true;
  }
  ASSERT_TRUE(success) << "term changed too often";
  c.RunFor(1000);
  const uint64_t total3 = c.TotalRpcs();
  std::printf("Count: %llu RPCs to elect, %llu RPCs for 10 entries, %llu RPCs per idle second\n",
              static_cast<unsigned long long>(election_rpcs),
              static_cast<unsigned long long>(entries_rpcs),
              static_cast<unsigned long long>(total3 - total2));
  EXPECT_LE(total3 - total2, 3 * 20u) << "too many RPCs for 1 second of idleness";
  SIM_ASSERT_OK(c.status());
}

}  // namespace
}  // namespace ds::raft::sim
