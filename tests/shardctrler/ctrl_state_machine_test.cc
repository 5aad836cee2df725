// The shard controller's state machine alone: every MIT 6.824 lab 4A property
// that does not need servers (the lab's sub-tests by name, minimal transfers
// checked for real), invalid input, the shard count, snapshots, and one pass
// through SessionStateMachine for exactly-once.
#include "shardctrler/ctrl_state_machine.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/btree_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "raft/core/rng.h"
#include "raft/rsm/session_state_machine.h"

namespace ds::ctrl {
namespace {

using Servers = std::vector<std::string>;

pb::Group Group(uint64_t gid, Servers servers) {
  pb::Group g;
  g.set_gid(gid);
  for (std::string& s : servers) g.add_servers(std::move(s));
  return g;
}

pb::CtrlCommand JoinCmd(std::vector<pb::Group> groups, int shard_count = kDefaultShardCount) {
  pb::CtrlCommand cmd;
  cmd.set_shard_count(shard_count);
  cmd.mutable_join();  // set even when empty
  for (pb::Group& g : groups) *cmd.mutable_join()->add_groups() = std::move(g);
  return cmd;
}

pb::CtrlCommand LeaveCmd(std::vector<uint64_t> gids, int shard_count = kDefaultShardCount) {
  pb::CtrlCommand cmd;
  cmd.set_shard_count(shard_count);
  cmd.mutable_leave();  // set even when empty
  for (uint64_t gid : gids) cmd.mutable_leave()->add_gids(gid);
  return cmd;
}

pb::CtrlCommand MoveCmd(uint32_t shard, uint64_t gid, int shard_count = kDefaultShardCount) {
  pb::CtrlCommand cmd;
  cmd.set_shard_count(shard_count);
  cmd.mutable_move()->set_shard(shard);
  cmd.mutable_move()->set_gid(gid);
  return cmd;
}

pb::CtrlCommand ServersCmd(uint64_t gid, Servers servers, int shard_count = kDefaultShardCount) {
  pb::CtrlCommand cmd;
  cmd.set_shard_count(shard_count);
  cmd.mutable_servers()->set_gid(gid);
  for (std::string& s : servers) cmd.mutable_servers()->add_servers(std::move(s));
  return cmd;
}

// A controller driven as the lab's clerk drives it: each call must succeed.
class Ctrl {
 public:
  explicit Ctrl(CtrlStateMachineOptions options = {}) : sm_(options) {}

  uint64_t Do(const pb::CtrlCommand& cmd) {
    absl::StatusOr<pb::CtrlResult> r = sm_.Execute(cmd);
    EXPECT_TRUE(r.ok()) << r.status() << " for " << cmd.ShortDebugString();
    return r.ok() ? r->num() : 0;
  }
  uint64_t Join(std::vector<pb::Group> groups) { return Do(JoinCmd(std::move(groups))); }
  uint64_t Leave(std::vector<uint64_t> gids) { return Do(LeaveCmd(std::move(gids))); }
  uint64_t Move(uint32_t shard, uint64_t gid) { return Do(MoveCmd(shard, gid)); }
  pb::Config Query(int64_t num = -1) const { return sm_.Query(num); }
  std::string Snapshot() const {
    std::string out;
    sm_.SnapshotTo(&out);
    return out;
  }
  CtrlStateMachine& sm() { return sm_; }

 private:
  CtrlStateMachine sm_;
};

// The lab's check(groups) on a configuration: exactly these groups, every
// shard on one of them (when there are any), counts differing by at most one.
::testing::AssertionResult Check(const pb::Config& c, std::vector<uint64_t> gids) {
  std::sort(gids.begin(), gids.end());
  std::vector<uint64_t> have;
  for (const pb::Group& g : c.groups()) have.push_back(g.gid());
  if (have != gids) {
    return ::testing::AssertionFailure()
           << "config " << c.num() << " has groups {" << absl::StrJoin(have, ",") << "}, want {"
           << absl::StrJoin(gids, ",") << "}";
  }
  std::vector<int> counts(gids.size(), 0);
  for (int s = 0; s < c.shards_size(); ++s) {
    auto it = std::lower_bound(gids.begin(), gids.end(), c.shards(s));
    if (gids.empty() ? c.shards(s) != 0 : it == gids.end() || *it != c.shards(s)) {
      return ::testing::AssertionFailure()
             << "config " << c.num() << ": shard " << s << " -> invalid group " << c.shards(s);
    }
    if (!gids.empty()) ++counts[static_cast<size_t>(it - gids.begin())];
  }
  if (!counts.empty()) {
    const auto [lo, hi] = std::minmax_element(counts.begin(), counts.end());
    if (*hi - *lo > 1) {
      return ::testing::AssertionFailure()
             << "config " << c.num() << ": max " << *hi << " too much larger than min " << *lo;
    }
  }
  return ::testing::AssertionSuccess();
}

Servers ServersOf(const pb::Config& c, uint64_t gid) {
  for (const pb::Group& g : c.groups()) {
    if (g.gid() == gid) return Servers(g.servers().begin(), g.servers().end());
  }
  return {};
}

// Shards whose owner differs between two configurations, as (from, to).
std::vector<std::pair<uint64_t, uint64_t>> Transfers(const pb::Config& a, const pb::Config& b) {
  std::vector<std::pair<uint64_t, uint64_t>> moved;
  for (int s = 0; s < a.shards_size(); ++s) {
    if (a.shards(s) != b.shards(s)) moved.emplace_back(a.shards(s), b.shards(s));
  }
  return moved;
}

// ---- configuration 0, queries ----

TEST(CtrlStateMachine, ConfigurationZeroHasNoGroupsAndEveryShardUnassigned) {
  Ctrl c;
  const pb::Config zero = c.Query(-1);
  EXPECT_EQ(zero.num(), 0u);
  EXPECT_EQ(zero.shards_size(), kDefaultShardCount);
  EXPECT_TRUE(Check(zero, {}));
  EXPECT_EQ(c.sm().latest_num(), 0u);
  EXPECT_EQ(c.sm().shard_count(), kDefaultShardCount);
  EXPECT_FALSE(c.sm().shard_count_fixed());
}

TEST(CtrlStateMachine, QueryOfNegativeOrPastLatestNumberReturnsTheLatest) {
  Ctrl c;
  c.Join({Group(1, {"a"})});
  c.Join({Group(2, {"b"})});
  const std::string latest = c.Query(2).SerializeAsString();
  for (int64_t num : {int64_t{-1}, int64_t{-7}, int64_t{3}, std::numeric_limits<int64_t>::max(),
                      std::numeric_limits<int64_t>::min()}) {
    EXPECT_EQ(c.Query(num).SerializeAsString(), latest) << "Query(" << num << ")";
  }
  EXPECT_EQ(c.Query(1).num(), 1u);
}

TEST(CtrlStateMachine, LogFormOfQueryAnswersLikeQueryAndChangesNothing) {
  Ctrl c;
  c.Join({Group(1, {"a"})});
  c.Join({Group(2, {"b"})});
  const std::string before = c.Snapshot();
  pb::CtrlCommand latest;
  latest.mutable_query();  // no num: the latest
  absl::StatusOr<pb::CtrlResult> r = c.sm().Execute(latest);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->num(), 2u);
  EXPECT_EQ(r->config().SerializeAsString(), c.Query(-1).SerializeAsString());
  pb::CtrlCommand one;
  one.mutable_query()->set_num(1);
  r = c.sm().Execute(one);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->config().SerializeAsString(), c.Query(1).SerializeAsString());
  one.mutable_query()->set_num(0);  // present and 0: configuration 0, not the latest
  EXPECT_EQ(c.sm().Execute(one)->num(), 0u);
  EXPECT_EQ(c.Snapshot(), before);
}

// ---- lab 4A, TestBasic ----

TEST(CtrlStateMachine, BasicLeaveJoin) {
  Ctrl c;
  std::vector<pb::Config> cfa;
  cfa.push_back(c.Query());
  EXPECT_TRUE(Check(cfa.back(), {}));

  EXPECT_EQ(c.Join({Group(1, {"x", "y", "z"})}), 1u);
  cfa.push_back(c.Query());
  EXPECT_TRUE(Check(cfa.back(), {1}));
  EXPECT_EQ(c.Join({Group(2, {"a", "b", "c"})}), 2u);
  cfa.push_back(c.Query());
  EXPECT_TRUE(Check(cfa.back(), {1, 2}));
  EXPECT_EQ(ServersOf(cfa.back(), 1), (Servers{"x", "y", "z"}));
  EXPECT_EQ(ServersOf(cfa.back(), 2), (Servers{"a", "b", "c"}));

  EXPECT_EQ(c.Leave({1}), 3u);
  cfa.push_back(c.Query());
  EXPECT_TRUE(Check(cfa.back(), {2}));
  EXPECT_EQ(ServersOf(cfa.back(), 2), (Servers{"a", "b", "c"}));
  EXPECT_EQ(c.Leave({2}), 4u);
  cfa.push_back(c.Query());
  EXPECT_TRUE(Check(cfa.back(), {}));
  EXPECT_EQ(c.sm().latest_num(), 4u);
}

TEST(CtrlStateMachine, HistoricalQueriesReturnIdenticalConfigurations) {
  Ctrl c;
  std::vector<std::string> recorded{c.Query().SerializeAsString()};
  c.Join({Group(1, {"x", "y", "z"})});
  recorded.push_back(c.Query().SerializeAsString());
  c.Join({Group(2, {"a", "b", "c"})});
  recorded.push_back(c.Query().SerializeAsString());
  c.Move(0, 2);
  recorded.push_back(c.Query().SerializeAsString());
  c.Leave({1});
  recorded.push_back(c.Query().SerializeAsString());
  c.Leave({2});
  recorded.push_back(c.Query().SerializeAsString());
  // Later changes, including a re-join of the same gids, leave history alone.
  c.Join({Group(1, {"p"}), Group(2, {"q"})});
  for (size_t i = 0; i < recorded.size(); ++i) {
    EXPECT_EQ(c.Query(static_cast<int64_t>(i)).SerializeAsString(), recorded[i])
        << "configuration " << i << " changed";
  }
  // The lab queries a zero Config{}'s number too: configuration 0.
  EXPECT_EQ(c.Query(pb::Config().num()).SerializeAsString(), recorded[0]);
}

TEST(CtrlStateMachine, MoveMakesANewConfigurationAndOverridesBalance) {
  Ctrl c;
  c.Join({Group(503, {"3a", "3b", "3c"})});
  c.Join({Group(504, {"4a", "4b", "4c"})});
  for (uint32_t shard = 0; shard < 10; ++shard) {
    const uint64_t before = c.sm().latest_num();
    const uint64_t target = shard < 5 ? 503 : 504;
    // Lab 4A: the number must increase when the shard was elsewhere; this
    // controller makes a new configuration for every Move.
    EXPECT_EQ(c.Move(shard, target), before + 1);
    EXPECT_EQ(c.Query().shards(static_cast<int>(shard)), target);
  }
  const pb::Config moved = c.Query();
  for (int s = 0; s < 10; ++s) EXPECT_EQ(moved.shards(s), s < 5 ? 503u : 504u) << "shard " << s;

  // Unbalance it, then a Join restores balance, moving only what it must.
  for (uint32_t shard = 5; shard < 10; ++shard) c.Move(shard, 503);
  const pb::Config lopsided = c.Query();
  c.Join({Group(505, {"5a"})});
  EXPECT_TRUE(Check(c.Query(), {503, 504, 505}));
  // 10 on 503: targets 4/3/3 keep 4 of them; 6 move, none from 504 or 505.
  EXPECT_EQ(Transfers(lopsided, c.Query()).size(), 6u);
  for (const auto& [from, to] : Transfers(lopsided, c.Query())) EXPECT_EQ(from, 503u);

  c.Leave({503});
  EXPECT_TRUE(Check(c.Query(), {504, 505}));
  c.Leave({504});
  EXPECT_TRUE(Check(c.Query(), {505}));
}

// Lab "Concurrent leave/join": 10 clients, each Join {gid+1000}, Join {gid},
// Leave [gid+1000], in every interleaving a seed draws. Every configuration
// along the way is balanced; every replica applying the same order agrees.
TEST(CtrlStateMachine, ConcurrentLeaveJoinInAnyInterleaving) {
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    raft::Rng rng(seed);
    Ctrl c, replica;
    std::vector<int> next_step(10, 0);
    std::vector<uint64_t> live;  // current gids
    std::vector<uint64_t> expected;
    for (int i = 0; i < 10; ++i) expected.push_back(100 + 10 * i);
    int remaining = 30;
    while (remaining > 0) {
      int client = static_cast<int>(rng.Uniform(10));
      while (next_step[client] == 3) client = (client + 1) % 10;
      const uint64_t gid = 100 + 10 * client;
      pb::CtrlCommand cmd;
      switch (next_step[client]++) {
        case 0:
          cmd = JoinCmd({Group(gid + 1000, {absl::StrCat("s", gid, "a")})});
          live.push_back(gid + 1000);
          break;
        case 1:
          cmd = JoinCmd({Group(gid, {absl::StrCat("s", gid, "b")})});
          live.push_back(gid);
          break;
        default:
          cmd = LeaveCmd({gid + 1000});
          live.erase(std::find(live.begin(), live.end(), gid + 1000));
          break;
      }
      --remaining;
      const uint64_t before = c.sm().latest_num();
      ASSERT_EQ(c.Do(cmd), before + 1);
      replica.Do(cmd);
      ASSERT_TRUE(Check(c.Query(), live));
    }
    EXPECT_TRUE(Check(c.Query(), expected));
    EXPECT_EQ(c.Snapshot(), replica.Snapshot());
  }
}

// The lab's "Minimal transfers after joins/leaves", checked for real: from a
// balanced configuration, a join moves shards only to the new group and a
// leave only away from the leaving group, and exactly as many as balance needs.
TEST(CtrlStateMachine, MinimalTransfersAfterJoinsAndLeaves) {
  Ctrl c;
  for (uint64_t gid = 1; gid <= 3; ++gid) c.Join({Group(gid, {absl::StrCat("s", gid)})});
  for (uint64_t gid = 11; gid <= 15; ++gid) {
    const pb::Config before = c.Query();
    c.Join({Group(gid, {"n"})});
    const pb::Config after = c.Query();
    const size_t groups = static_cast<size_t>(after.groups_size());
    for (const auto& [from, to] : Transfers(before, after)) {
      EXPECT_EQ(to, gid) << "non-minimal transfer after Join(" << gid << ")";
    }
    // The joiner gets floor(10 / G) or one more, all of them moved.
    const size_t got = Transfers(before, after).size();
    EXPECT_TRUE(got == 10 / groups || got == 10 / groups + 1) << got;
  }
  for (uint64_t gid = 11; gid <= 15; ++gid) {
    const pb::Config before = c.Query();
    c.Leave({gid});
    const pb::Config after = c.Query();
    int owned = 0;
    for (uint64_t owner : before.shards()) owned += owner == gid;
    EXPECT_EQ(Transfers(before, after).size(), static_cast<size_t>(owned));
    for (const auto& [from, to] : Transfers(before, after)) {
      EXPECT_EQ(from, gid) << "non-minimal transfer after Leave(" << gid << ")";
    }
  }
  EXPECT_TRUE(Check(c.Query(), {1, 2, 3}));
}

// ---- lab 4A, TestMulti ----

TEST(CtrlStateMachine, MultiGroupJoinLeave) {
  Ctrl c;
  c.Join({Group(1, {"x", "y", "z"}), Group(2, {"a", "b", "c"})});
  EXPECT_TRUE(Check(c.Query(), {1, 2}));
  EXPECT_EQ(c.Query().num(), 1u) << "one join, one configuration";
  c.Join({Group(3, {"j", "k", "l"})});
  EXPECT_TRUE(Check(c.Query(), {1, 2, 3}));
  EXPECT_EQ(ServersOf(c.Query(), 1), (Servers{"x", "y", "z"}));
  EXPECT_EQ(ServersOf(c.Query(), 2), (Servers{"a", "b", "c"}));
  EXPECT_EQ(ServersOf(c.Query(), 3), (Servers{"j", "k", "l"}));
  c.Leave({1, 3});
  EXPECT_TRUE(Check(c.Query(), {2}));
  EXPECT_EQ(ServersOf(c.Query(), 2), (Servers{"a", "b", "c"}));
  c.Leave({2});
  EXPECT_TRUE(Check(c.Query(), {}));
}

TEST(CtrlStateMachine, ConcurrentMultiLeaveJoinInAnyInterleaving) {
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    raft::Rng rng(seed);
    Ctrl c;
    std::vector<int> next_step(10, 0);
    std::vector<uint64_t> live, expected;
    for (int i = 0; i < 10; ++i) expected.push_back(1000 + i);
    for (int remaining = 20; remaining > 0; --remaining) {
      int client = static_cast<int>(rng.Uniform(10));
      while (next_step[client] == 2) client = (client + 1) % 10;
      const uint64_t gid = 1000 + client;
      if (next_step[client]++ == 0) {
        c.Join({Group(gid, {"a", "b", "c"}), Group(gid + 1000, {"a"}), Group(gid + 2000, {"a"})});
        live.insert(live.end(), {gid, gid + 1000, gid + 2000});
      } else {
        c.Leave({gid + 1000, gid + 2000});
        live.erase(std::find(live.begin(), live.end(), gid + 1000));
        live.erase(std::find(live.begin(), live.end(), gid + 2000));
      }
      ASSERT_TRUE(Check(c.Query(), live));
    }
    EXPECT_TRUE(Check(c.Query(), expected));
  }
}

TEST(CtrlStateMachine, MinimalTransfersAfterMultijoinsAndMultileaves) {
  Ctrl c;
  for (uint64_t gid = 1; gid <= 3; ++gid) c.Join({Group(gid, {"s"})});
  const pb::Config before = c.Query();
  std::vector<pb::Group> joining;
  for (uint64_t gid = 11; gid <= 15; ++gid) joining.push_back(Group(gid, {"a", "b"}));
  c.Join(joining);
  const pb::Config joined = c.Query();
  EXPECT_TRUE(Check(joined, {1, 2, 3, 11, 12, 13, 14, 15}));
  // 4/3/3 over 8 groups: targets 2, 2, 1 for the old groups (the larger
  // targets go to the largest owners), 1 for each new one: 5 shards move, all
  // to new groups.
  EXPECT_EQ(Transfers(before, joined).size(), 5u);
  for (const auto& [from, to] : Transfers(before, joined)) {
    EXPECT_GE(to, 11u) << "non-minimal transfer after multijoin";
  }
  c.Leave({11, 12, 13, 14, 15});
  const pb::Config left = c.Query();
  EXPECT_TRUE(Check(left, {1, 2, 3}));
  int owned_by_leavers = 0;
  for (uint64_t owner : joined.shards()) owned_by_leavers += owner >= 11;
  EXPECT_EQ(Transfers(joined, left).size(), static_cast<size_t>(owned_by_leavers));
  for (const auto& [from, to] : Transfers(joined, left)) {
    EXPECT_GE(from, 11u) << "non-minimal transfer after multileave";
  }
}

// ---- joins in detail ----

TEST(CtrlStateMachine, JoinKeepsEachServerListInOrderAndSortsGroupsByGid) {
  Ctrl c;
  c.Join({Group(3, {"c2", "c1", "c3"}), Group(1, {"z", "a"})});
  const pb::Config config = c.Query();
  ASSERT_EQ(config.groups_size(), 2);
  EXPECT_EQ(config.groups(0).gid(), 1u);
  EXPECT_EQ(config.groups(1).gid(), 3u);
  EXPECT_EQ(ServersOf(config, 3), (Servers{"c2", "c1", "c3"}));
  EXPECT_EQ(ServersOf(config, 1), (Servers{"z", "a"}));
}

TEST(CtrlStateMachine, GroupOrderInAJoinDoesNotChangeTheResult) {
  Ctrl a, b;
  a.Join({Group(1, {"x"})});
  b.Join({Group(1, {"x"})});
  a.Join({Group(7, {"p"}), Group(4, {"q"}), Group(9, {"r"})});
  b.Join({Group(9, {"r"}), Group(7, {"p"}), Group(4, {"q"})});
  a.Leave({9, 1});
  b.Leave({1, 9});
  EXPECT_EQ(a.Snapshot(), b.Snapshot());
}

TEST(CtrlStateMachine, GroupMayJoinAgainAfterLeaving) {
  Ctrl c;
  c.Join({Group(1, {"x"}), Group(2, {"y"})});
  c.Leave({1});
  EXPECT_TRUE(Check(c.Query(), {2}));
  c.Join({Group(1, {"new1", "new2"})});
  EXPECT_TRUE(Check(c.Query(), {1, 2}));
  EXPECT_EQ(ServersOf(c.Query(), 1), (Servers{"new1", "new2"}));
  EXPECT_EQ(ServersOf(c.Query(1), 1), (Servers{"x"})) << "history kept the old servers";
}

TEST(CtrlStateMachine, MoreGroupsThanShardsLeavesSomeWithoutShards) {
  Ctrl c({.shard_count = 3});
  std::vector<pb::Group> groups;
  for (uint64_t gid = 1; gid <= 5; ++gid) groups.push_back(Group(gid, {"s"}));
  pb::CtrlCommand join = JoinCmd(groups, 3);
  c.Do(join);
  EXPECT_TRUE(Check(c.Query(), {1, 2, 3, 4, 5}));
  pb::CtrlCommand leave_all = LeaveCmd({1, 2, 3, 4, 5}, 3);
  c.Do(leave_all);
  EXPECT_TRUE(Check(c.Query(), {})) << "everything goes back to gid 0";
}

// ---- invalid input ----

TEST(CtrlStateMachine, InvalidInputIsRefusedAndChangesNothing) {
  Ctrl c;
  c.Join({Group(1, {"x"}), Group(2, {"y"})});
  c.Move(3, 1);
  const std::string before = c.Snapshot();

  pb::CtrlCommand no_op;
  no_op.set_shard_count(kDefaultShardCount);
  pb::CtrlCommand no_count = JoinCmd({Group(3, {"z"})});
  no_count.clear_shard_count();
  const std::vector<std::pair<std::string, pb::CtrlCommand>> cases = {
      {"already", JoinCmd({Group(2, {"y2"})})},
      {"gid 0", JoinCmd({Group(0, {"z"})})},
      {"no servers", JoinCmd({Group(3, {})})},
      {"empty server", JoinCmd({Group(3, {"z", ""})})},
      {"twice", JoinCmd({Group(3, {"z"}), Group(3, {"w"})})},
      {"twice", JoinCmd({Group(3, {"z"}), Group(4, {"z"}), Group(3, {"z"})})},
      {"no group", JoinCmd({})},
      {"already", JoinCmd({Group(3, {"z"}), Group(1, {"x"})})},  // valid first, then bad
      {"not in configuration", LeaveCmd({3})},
      {"not in configuration", LeaveCmd({0})},
      {"not in configuration", LeaveCmd({1, 3})},
      {"twice", LeaveCmd({1, 1})},
      {"no group", LeaveCmd({})},
      {"not in configuration", MoveCmd(0, 3)},
      {"not in configuration", MoveCmd(0, 0)},
      {"out of range", MoveCmd(10, 1)},
      {"out of range", MoveCmd(std::numeric_limits<uint32_t>::max(), 1)},
      {"no operation", no_op},
      {"shard count 0", no_count},
  };
  for (const auto& [needle, cmd] : cases) {
    SCOPED_TRACE(cmd.ShortDebugString());
    absl::StatusOr<pb::CtrlResult> r = c.sm().Execute(cmd);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status();
    EXPECT_EQ(c.Snapshot(), before);
    EXPECT_EQ(c.sm().latest_num(), 2u);
  }
  // Bytes that are not a command, through Apply.
  absl::StatusOr<std::string> garbage = c.sm().Apply("\xff\xff\xff", rsm::ApplyContext{.index = 9});
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(garbage.status().message().find("entry 9"), std::string::npos) << garbage.status();
  EXPECT_EQ(c.Snapshot(), before);
}

// ---- Servers: a group's membership changed ----

TEST(CtrlStateMachine, ServersMakesANewConfigurationWithOnlyThatGroupsListChanged) {
  Ctrl c;
  c.Join({Group(1, {"a1", "a2", "a3"}), Group(2, {"b1"})});
  c.Move(0, 2);  // unbalanced on purpose: Servers must not rebalance
  const pb::Config before = c.Query();
  ASSERT_EQ(before.num(), 2u);

  EXPECT_EQ(c.Do(ServersCmd(1, {"a1", "a3", "a4"})), 3u);
  const pb::Config after = c.Query();
  EXPECT_EQ(after.num(), 3u);
  EXPECT_EQ(ServersOf(after, 1), Servers({"a1", "a3", "a4"}));
  EXPECT_EQ(ServersOf(after, 2), Servers({"b1"}));
  EXPECT_EQ(std::vector<uint64_t>(after.shards().begin(), after.shards().end()),
            std::vector<uint64_t>(before.shards().begin(), before.shards().end()))
      << "Servers moved a shard";
  // The old configuration is unchanged.
  EXPECT_EQ(c.Query(2).SerializeAsString(), before.SerializeAsString());
  // The list is kept in the order given (the order clients try them).
  EXPECT_EQ(c.Do(ServersCmd(2, {"b3", "b2"})), 4u);
  EXPECT_EQ(ServersOf(c.Query(), 2), Servers({"b3", "b2"}));
}

TEST(CtrlStateMachine, ServersWithTheCurrentListChangesNothingAndReturnsTheLatestNumber) {
  Ctrl c;
  c.Join({Group(1, {"a1", "a2"})});
  c.Join({Group(2, {"b1"})});
  EXPECT_EQ(c.Do(ServersCmd(1, {"a1", "a3"})), 3u);
  const std::string before = c.Snapshot();
  // Sent again (a new leader of the group, or a retry with a new sequence).
  EXPECT_EQ(c.Do(ServersCmd(1, {"a1", "a3"})), 3u);
  EXPECT_EQ(c.Do(ServersCmd(2, {"b1"})), 3u);
  EXPECT_EQ(c.Snapshot(), before);
  EXPECT_EQ(c.sm().latest_num(), 3u);
  // Another order is another list.
  EXPECT_EQ(c.Do(ServersCmd(1, {"a3", "a1"})), 4u);
}

TEST(CtrlStateMachine, ServersInvalidInputIsRefusedAndChangesNothing) {
  Ctrl c;
  c.Join({Group(1, {"x"}), Group(2, {"y"})});
  c.Leave({2});
  const std::string before = c.Snapshot();
  const std::vector<std::pair<std::string, pb::CtrlCommand>> cases = {
      {"gid 0", ServersCmd(0, {"z"})},
      {"not in configuration", ServersCmd(3, {"z"})},
      {"not in configuration", ServersCmd(2, {"z"})},  // left
      {"no servers", ServersCmd(1, {})},
      {"empty server", ServersCmd(1, {"x", ""})},
      {"command's shard count", ServersCmd(1, {"z"}, 0)},
  };
  for (const auto& [needle, cmd] : cases) {
    SCOPED_TRACE(cmd.ShortDebugString());
    absl::StatusOr<pb::CtrlResult> r = c.sm().Execute(cmd);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status();
    EXPECT_EQ(c.Snapshot(), before);
  }
  // Another shard count than the fixed one, as for Join.
  absl::StatusOr<pb::CtrlResult> r = c.sm().Execute(ServersCmd(1, {"z"}, 12));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_EQ(c.Snapshot(), before);
  // Before any group exists there is nothing to change (and the count stays open).
  Ctrl fresh;
  EXPECT_EQ(fresh.sm().Execute(ServersCmd(1, {"z"}, 12)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fresh.sm().shard_count_fixed());
}

TEST(CtrlStateMachine, SnapshotRoundTripKeepsServerListChanges) {
  Ctrl c;
  c.Join({Group(1, {"a1", "a2", "a3"}), Group(2, {"b1"})});
  c.Do(ServersCmd(1, {"a1", "a2", "a4"}));
  c.Do(ServersCmd(1, {"a2", "a4", "a5"}));
  const std::string bytes = c.Snapshot();
  Ctrl restored;
  ASSERT_TRUE(restored.sm().Restore(bytes).ok());
  EXPECT_EQ(restored.sm().latest_num(), 3u);
  for (int64_t num = 0; num <= 3; ++num) {
    EXPECT_EQ(restored.Query(num).SerializeAsString(), c.Query(num).SerializeAsString());
  }
  EXPECT_EQ(ServersOf(restored.Query(2), 1), Servers({"a1", "a2", "a4"}));
  // Both go on identically, the idempotent case included.
  EXPECT_EQ(restored.Do(ServersCmd(1, {"a2", "a4", "a5"})), 3u);
  EXPECT_EQ(c.Do(ServersCmd(2, {"b2"})), 4u);
  EXPECT_EQ(restored.Do(ServersCmd(2, {"b2"})), 4u);
  EXPECT_EQ(restored.Snapshot(), c.Snapshot());
}

// ---- the shard count ----

TEST(CtrlStateMachine, FirstConfigurationFixesTheShardCountFromTheCommand) {
  // This replica was started with 10, the proposer with 12: the log decides.
  Ctrl c;
  EXPECT_TRUE(c.sm().CheckShardCount(12).ok()) << "nothing to contradict yet";
  c.Do(JoinCmd({Group(1, {"x"})}, 12));
  EXPECT_TRUE(c.sm().shard_count_fixed());
  EXPECT_EQ(c.sm().shard_count(), 12);
  EXPECT_EQ(c.Query(0).shards_size(), 12) << "configuration 0 is re-made at the fixed count";
  EXPECT_TRUE(Check(c.Query(0), {}));
  EXPECT_EQ(c.Query(1).shards_size(), 12);

  // A server with --shards=10 proposing now is refused, on every replica.
  const std::string before = c.Snapshot();
  for (const pb::CtrlCommand& cmd :
       {JoinCmd({Group(2, {"y"})}, 10), LeaveCmd({1}, 10), MoveCmd(0, 1, 10)}) {
    absl::StatusOr<pb::CtrlResult> r = c.sm().Execute(cmd);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  }
  EXPECT_EQ(c.Snapshot(), before);
  absl::Status check = c.sm().CheckShardCount(10);
  EXPECT_EQ(check.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(check.message().find("--shards=10"), std::string::npos) << check;
  EXPECT_NE(check.message().find("12 shards"), std::string::npos) << check;
  EXPECT_TRUE(c.sm().CheckShardCount(12).ok());
}

TEST(CtrlStateMachine, ShardCountValidation) {
  EXPECT_TRUE(ValidateShardCount(1).ok());
  EXPECT_TRUE(ValidateShardCount(kMaxShardCount).ok());
  EXPECT_EQ(ValidateShardCount(0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateShardCount(-3).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateShardCount(kMaxShardCount + 1).code(), absl::StatusCode::kInvalidArgument);
  Ctrl c;
  absl::StatusOr<pb::CtrlResult> r = c.sm().Execute(JoinCmd({Group(1, {"x"})}, kMaxShardCount + 1));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- snapshots ----

TEST(CtrlStateMachine, SnapshotRoundTripKeepsHistoryAndShardCount) {
  Ctrl c({.shard_count = 12});
  c.Do(JoinCmd({Group(1, {"x", "y"}), Group(2, {"z"})}, 12));
  c.Do(MoveCmd(0, 2, 12));
  c.Do(LeaveCmd({1}, 12));
  c.Do(JoinCmd({Group(1, {"x2"})}, 12));
  const std::string bytes = c.Snapshot();

  Ctrl restored;  // started with the default 10
  ASSERT_TRUE(restored.sm().Restore(bytes).ok());
  EXPECT_EQ(restored.sm().shard_count(), 12);
  EXPECT_EQ(restored.sm().latest_num(), 4u);
  for (int64_t num = 0; num <= 4; ++num) {
    EXPECT_EQ(restored.Query(num).SerializeAsString(), c.Query(num).SerializeAsString());
  }
  EXPECT_EQ(restored.Snapshot(), bytes);
  // The server started with --shards=10 must refuse to start.
  absl::Status check = restored.sm().CheckShardCount(10);
  EXPECT_EQ(check.code(), absl::StatusCode::kFailedPrecondition) << check;
  EXPECT_TRUE(restored.sm().CheckShardCount(12).ok());
  // Both go on identically.
  c.Do(JoinCmd({Group(5, {"w"})}, 12));
  restored.Do(JoinCmd({Group(5, {"w"})}, 12));
  EXPECT_EQ(restored.Snapshot(), c.Snapshot());
}

TEST(CtrlStateMachine, SnapshotOfConfigurationZeroOnlyLeavesTheCountOpen) {
  Ctrl c({.shard_count = 7});
  Ctrl restored;
  ASSERT_TRUE(restored.sm().Restore(c.Snapshot()).ok());
  EXPECT_EQ(restored.sm().shard_count(), 7);
  EXPECT_FALSE(restored.sm().shard_count_fixed());
  EXPECT_TRUE(restored.sm().CheckShardCount(10).ok());
}

TEST(CtrlStateMachine, RestoreRefusesAnInconsistentSnapshotAndKeepsTheState) {
  Ctrl c;
  c.Join({Group(1, {"x"}), Group(2, {"y"})});
  pb::CtrlSnapshot good;
  ASSERT_TRUE(good.ParseFromString(c.Snapshot()));

  std::vector<std::pair<std::string, pb::CtrlSnapshot>> bad;
  pb::CtrlSnapshot s = good;
  s.set_shard_count(0);
  bad.emplace_back("shard count 0", s);
  s = good;
  s.clear_configs();
  bad.emplace_back("no configurations", s);
  s = good;
  s.mutable_configs(1)->set_num(5);
  bad.emplace_back("misnumbered", s);
  s = good;
  s.mutable_configs(1)->add_shards(1);
  bad.emplace_back("11 shards", s);
  s = good;
  s.mutable_configs(1)->set_shards(0, 9);
  bad.emplace_back("shard on an absent group", s);
  s = good;
  s.mutable_configs(1)->set_shards(0, 0);
  bad.emplace_back("unassigned shard beside groups", s);
  s = good;
  s.mutable_configs(1)->mutable_groups()->SwapElements(0, 1);
  bad.emplace_back("unsorted groups", s);
  s = good;
  *s.mutable_configs(0)->add_groups() = Group(1, {"x"});
  bad.emplace_back("configuration 0 with a group", s);
  s = good;
  s.mutable_configs(1)->mutable_groups(0)->clear_servers();
  bad.emplace_back("group without servers", s);

  Ctrl target;
  target.Join({Group(4, {"q"})});
  const std::string before = target.Snapshot();
  EXPECT_EQ(target.sm().Restore("\xff\xff").code(), absl::StatusCode::kInvalidArgument);
  for (const auto& [what, snapshot] : bad) {
    EXPECT_EQ(target.sm().Restore(snapshot.SerializeAsString()).code(),
              absl::StatusCode::kInvalidArgument)
        << what;
    EXPECT_EQ(target.Snapshot(), before) << what;
    EXPECT_EQ(target.sm().latest_num(), 1u) << what;
  }
  EXPECT_TRUE(target.sm().Restore(good.SerializeAsString()).ok());
}

// ---- under the session layer ----

constexpr int64_t kT0 = 1'700'000'000'000'000;

rsm::pb::SessionRef Ref(uint64_t client_id, uint64_t sequence) {
  rsm::pb::SessionRef ref;
  ref.set_client_id(client_id);
  ref.set_created_unix_micros(kT0);
  ref.set_sequence(sequence);
  return ref;
}

TEST(CtrlStateMachine, RetriedJoinThroughTheSessionLayerMakesOneConfiguration) {
  CtrlStateMachine ctrl;
  rsm::SessionStateMachine sm(&ctrl);
  uint64_t index = 0;
  auto apply = [&](const rsm::pb::SessionRef& ref, const pb::CtrlCommand& cmd) {
    return sm.Apply(rsm::EncodeCommand(&ref, cmd.SerializeAsString(), kT0), ++index);
  };
  const pb::CtrlCommand join = JoinCmd({Group(1, {"x"})});
  absl::StatusOr<std::string> first = apply(Ref(7, 1), join);
  ASSERT_TRUE(first.ok()) << first.status();
  // The clerk timed out and resent the same Join: the log holds it twice.
  absl::StatusOr<std::string> retry = apply(Ref(7, 1), join);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(*retry, *first);
  pb::CtrlResult result;
  ASSERT_TRUE(result.ParseFromString(*retry));
  EXPECT_EQ(result.num(), 1u);
  EXPECT_EQ(ctrl.latest_num(), 1u) << "a retried Join made a second configuration";

  // An invalid command is not recorded; the session goes on.
  EXPECT_EQ(apply(Ref(7, 2), JoinCmd({Group(1, {"x"})})).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::string> second = apply(Ref(7, 2), JoinCmd({Group(2, {"y"})}));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(ctrl.latest_num(), 2u);

  // After a restart from a snapshot the retry is still recognized.
  CtrlStateMachine ctrl2;
  rsm::SessionStateMachine sm2(&ctrl2);
  ASSERT_TRUE(sm2.Restore(sm.Snapshot()).ok());
  const rsm::pb::SessionRef ref2 = Ref(7, 2);
  absl::StatusOr<std::string> late = sm2.Apply(
      rsm::EncodeCommand(&ref2, JoinCmd({Group(2, {"y"})}).SerializeAsString(), kT0), index + 1);
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ(*late, *second);
  EXPECT_EQ(ctrl2.latest_num(), 2u);
  std::string a, b;
  ctrl.SnapshotTo(&a);
  ctrl2.SnapshotTo(&b);
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace ds::ctrl
