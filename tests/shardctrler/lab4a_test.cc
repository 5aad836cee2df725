// 6.824 lab 4A (shardctrler/test_test.go), every sub-test by name, in
// process: 3 controller replicas on a reliable network (lab4a_harness.h).
// The lab runs its sub-tests one after another on one cluster; here each is a
// TEST of its own that first replays the steps the lab ran before it (so
// "Minimal transfers after joins" starts from the state "Concurrent
// leave/join" leaves).
//
// Beyond the lab: every Join, Leave and Move is checked against the
// configuration before it (TransitionProblem, MoveProblem), which makes the
// lab's vacuous minimal-transfer checks real: shards move only to joining
// groups (join) or only away from leaving ones (leave), exactly as many as
// balance needs.
#include <cstdint>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/shardctrler/lab4a_harness.h"

namespace ds::ctrl::lab4a {
namespace {

constexpr int kServers = 3;    // 6.824's nservers
constexpr int kShards = 10;    // NShards
constexpr int kParallel = 10;  // npara

ClusterOptions Options() { return {.servers = kServers, .seed = CurrentTestSeed()}; }

std::set<uint64_t> Set(const std::vector<uint64_t>& gids) { return {gids.begin(), gids.end()}; }

// Query through `ck`; a failure is reported and gives an empty configuration.
pb::Config Query(Clerk& ck, int64_t num = -1) {
  absl::StatusOr<pb::Config> c = ck.Query(num);
  EXPECT_TRUE(c.ok()) << "Query(" << num << "): " << c.status();
  return c.ok() ? *std::move(c) : pb::Config();
}

// 6.824's check(groups) on the latest configuration.
void Check(Clerk& ck, const std::set<uint64_t>& groups) {
  EXPECT_EQ(CheckGroups(Query(ck), groups), "");
}

// Join, Leave and Move through `ck`, each checked against the configuration
// before the one it made (safe with concurrent clients: configurations never
// change). False if the operation failed.
bool Join(Clerk& ck, const GroupServers& groups) {
  absl::StatusOr<uint64_t> num = ck.Join(groups);
  EXPECT_TRUE(num.ok()) << "Join: " << num.status();
  if (!num.ok()) return false;
  std::set<uint64_t> joined;
  for (const auto& [gid, servers] : groups) joined.insert(gid);
  EXPECT_EQ(TransitionProblem(Query(ck, *num - 1), Query(ck, *num), joined, {}, groups), "");
  return true;
}

bool Leave(Clerk& ck, const std::vector<uint64_t>& gids) {
  absl::StatusOr<uint64_t> num = ck.Leave(gids);
  EXPECT_TRUE(num.ok()) << "Leave: " << num.status();
  if (!num.ok()) return false;
  EXPECT_EQ(TransitionProblem(Query(ck, *num - 1), Query(ck, *num), {}, Set(gids)), "");
  return true;
}

bool Move(Clerk& ck, uint32_t shard, uint64_t gid) {
  absl::StatusOr<uint64_t> num = ck.Move(shard, gid);
  EXPECT_TRUE(num.ok()) << "Move: " << num.status();
  if (!num.ok()) return false;
  EXPECT_EQ(MoveProblem(Query(ck, *num - 1), Query(ck, *num), shard, gid), "");
  return true;
}

std::vector<std::string> ServersOf(const pb::Config& c, uint64_t gid) {
  for (const pb::Group& g : c.groups()) {
    if (g.gid() == gid) return {g.servers().begin(), g.servers().end()};
  }
  return {};
}

// Every shard group `gid` owns in `later` it owned in `earlier` too: the
// lab's minimal-transfer check, for groups that actually own shards.
void ExpectKeptOnly(const pb::Config& earlier, const pb::Config& later,
                    const std::set<uint64_t>& gids, const char* after_what) {
  for (int s = 0; s < later.shards_size(); ++s) {
    if (gids.contains(later.shards(s))) {
      EXPECT_EQ(earlier.shards(s), later.shards(s))
          << "non-minimal transfer after " << after_what << ": shard " << s;
    }
  }
}

// ---- TestBasic's steps ----

// "Basic leave/join"; returns cfa, the configurations it recorded (cfa[3] is
// the zero Config{}, as in the lab: Query(0)).
std::vector<pb::Config> BasicLeaveJoin(Clerk& ck) {
  std::vector<pb::Config> cfa(6);
  cfa[0] = Query(ck);
  Check(ck, {});
  EXPECT_EQ(cfa[0].num(), 0u);
  EXPECT_EQ(CheckGroups(cfa[0], {}), "");

  EXPECT_TRUE(Join(ck, {{1, {"x", "y", "z"}}}));
  Check(ck, {1});
  cfa[1] = Query(ck);

  EXPECT_TRUE(Join(ck, {{2, {"a", "b", "c"}}}));
  Check(ck, {1, 2});
  cfa[2] = Query(ck);

  const pb::Config cfx = Query(ck);
  EXPECT_EQ(ServersOf(cfx, 1), (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ(ServersOf(cfx, 2), (std::vector<std::string>{"a", "b", "c"}));

  EXPECT_TRUE(Leave(ck, {1}));
  Check(ck, {2});
  cfa[4] = Query(ck);

  EXPECT_TRUE(Leave(ck, {2}));
  cfa[5] = Query(ck);
  Check(ck, {});
  // cfa[3]: the lab leaves it Config{}; configuration 0 has every shard on 0.
  cfa[3].set_num(0);
  cfa[3].mutable_shards()->Resize(kShards, 0);
  return cfa;
}

// "Concurrent leave/join": 10 clerks each join gid + 1000, join gid, leave
// gid + 1000; returns the gids that stay (100, 110, ..., 190).
std::set<uint64_t> ConcurrentLeaveJoin(Cluster& cluster) {
  std::vector<uint64_t> gids;
  std::vector<std::thread> clients;
  for (int i = 0; i < kParallel; ++i) {
    const uint64_t gid = static_cast<uint64_t>(i * 10 + 100);
    gids.push_back(gid);
    clients.emplace_back([&cluster, gid] {
      std::unique_ptr<Clerk> ck = cluster.MakeClerk();
      if (!Join(*ck, {{gid + 1000, {absl::StrCat("s", gid, "a")}}})) return;
      if (!Join(*ck, {{gid, {absl::StrCat("s", gid, "b")}}})) return;
      Leave(*ck, {gid + 1000});
    });
  }
  for (std::thread& t : clients) t.join();
  return Set(gids);
}

// "Minimal transfers after joins": 5 groups 11..15 join one by one; returns
// the configuration after them.
pb::Config MinimalTransfersAfterJoins(Clerk& ck, const std::set<uint64_t>& old_groups) {
  const pb::Config c1 = Query(ck);
  for (uint64_t i = 0; i < 5; ++i) {
    const uint64_t gid = kParallel + 1 + i;
    // The lab's server list, duplicate included.
    EXPECT_TRUE(Join(
        ck, {{gid, {absl::StrCat(gid, "a"), absl::StrCat(gid, "b"), absl::StrCat(gid, "b")}}}));
  }
  const pb::Config c2 = Query(ck);
  EXPECT_EQ(c2.num(), c1.num() + 5);
  std::set<uint64_t> all = old_groups;
  for (uint64_t gid = kParallel + 1; gid <= kParallel + 5; ++gid) all.insert(gid);
  EXPECT_EQ(CheckGroups(c2, all), "");
  ExpectKeptOnly(c1, c2, old_groups, "Join()s");
  return c2;
}

// ---- TestMulti's steps ----

void MultiGroupJoinLeave(Clerk& ck) {
  EXPECT_EQ(Query(ck).num(), 0u);
  Check(ck, {});
  EXPECT_TRUE(Join(ck, {{1, {"x", "y", "z"}}, {2, {"a", "b", "c"}}}));
  Check(ck, {1, 2});
  EXPECT_TRUE(Join(ck, {{3, {"j", "k", "l"}}}));
  Check(ck, {1, 2, 3});
  pb::Config cfx = Query(ck);
  EXPECT_EQ(ServersOf(cfx, 1), (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ(ServersOf(cfx, 2), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ServersOf(cfx, 3), (std::vector<std::string>{"j", "k", "l"}));
  EXPECT_TRUE(Leave(ck, {1, 3}));
  Check(ck, {2});
  cfx = Query(ck);
  EXPECT_EQ(ServersOf(cfx, 2), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(Leave(ck, {2}));
  Check(ck, {});
}

// "Concurrent multi leave/join": 10 clerks each join {gid, gid + 1000,
// gid + 2000} in one call, then leave the last two in one call; returns the
// gids that stay (1000..1009).
std::set<uint64_t> ConcurrentMultiLeaveJoin(Cluster& cluster) {
  std::vector<uint64_t> gids;
  std::vector<std::thread> clients;
  for (int i = 0; i < kParallel; ++i) {
    const uint64_t gid = static_cast<uint64_t>(i + 1000);
    gids.push_back(gid);
    clients.emplace_back([&cluster, gid] {
      std::unique_ptr<Clerk> ck = cluster.MakeClerk();
      if (!Join(*ck,
                {{gid, {absl::StrCat(gid, "a"), absl::StrCat(gid, "b"), absl::StrCat(gid, "c")}},
                 {gid + 1000, {absl::StrCat(gid + 1000, "a")}},
                 {gid + 2000, {absl::StrCat(gid + 2000, "a")}}})) {
        return;
      }
      Leave(*ck, {gid + 1000, gid + 2000});
    });
  }
  for (std::thread& t : clients) t.join();
  return Set(gids);
}

// "Minimal transfers after multijoins": groups 11..15 join in one call.
pb::Config MinimalTransfersAfterMultijoins(Clerk& ck, const std::set<uint64_t>& old_groups) {
  const pb::Config c1 = Query(ck);
  GroupServers m;
  std::set<uint64_t> all = old_groups;
  for (uint64_t i = 0; i < 5; ++i) {
    const uint64_t gid = kParallel + 1 + i;
    m[gid] = {absl::StrCat(gid, "a"), absl::StrCat(gid, "b")};
    all.insert(gid);
  }
  EXPECT_TRUE(Join(ck, m));
  const pb::Config c2 = Query(ck);
  EXPECT_EQ(c2.num(), c1.num() + 1);
  EXPECT_EQ(CheckGroups(c2, all), "");
  ExpectKeptOnly(c1, c2, old_groups, "multijoins");
  return c2;
}

// ---------------------------------------------------------------------------
// TestBasic
// ---------------------------------------------------------------------------

TEST(ShardCtrler4A, BasicLeaveJoin) {
  Cluster cluster(Options());
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  const std::vector<pb::Config> cfa = BasicLeaveJoin(*ck);
  EXPECT_EQ(cfa[5].num(), 4u);
  // The handout: a number past the latest (or -1) queries the latest.
  EXPECT_EQ(ConfigDifference(cfa[5], Query(*ck, 1000)), "");
}

TEST(ShardCtrler4A, HistoricalQueries) {
  Cluster cluster(Options());
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  const std::vector<pb::Config> cfa = BasicLeaveJoin(*ck);
  for (int s = 0; s < kServers; ++s) {
    cluster.ShutdownServer(s);
    for (size_t i = 0; i < cfa.size(); ++i) {
      EXPECT_EQ(ConfigDifference(cfa[i], Query(*ck, static_cast<int64_t>(cfa[i].num()))), "")
          << "with server " << s << " down";
    }
    cluster.StartServer(s);
    cluster.ConnectAll();
  }
}

TEST(ShardCtrler4A, Move) {
  Cluster cluster(Options());
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  BasicLeaveJoin(*ck);

  constexpr uint64_t kGid3 = 503;
  constexpr uint64_t kGid4 = 504;
  ASSERT_TRUE(Join(*ck, {{kGid3, {"3a", "3b", "3c"}}}));
  ASSERT_TRUE(Join(*ck, {{kGid4, {"4a", "4b", "4c"}}}));
  for (uint32_t i = 0; i < kShards; ++i) {
    const pb::Config cf = Query(*ck);
    const uint64_t target = i < kShards / 2 ? kGid3 : kGid4;
    ASSERT_TRUE(Move(*ck, i, target));
    if (cf.shards(static_cast<int>(i)) != target) {
      EXPECT_GT(Query(*ck).num(), cf.num()) << "Move should increase Config.Num";
    }
  }
  const pb::Config cf2 = Query(*ck);
  for (int i = 0; i < kShards; ++i) {
    EXPECT_EQ(cf2.shards(i), i < kShards / 2 ? kGid3 : kGid4)
        << "expected shard " << i << " on the group it was moved to";
  }
  // An unbalancing Move, then the next Join or Leave restores balance.
  ASSERT_TRUE(Move(*ck, kShards - 1, kGid3));
  EXPECT_NE(Unbalanced(Query(*ck)), "");
  ASSERT_TRUE(Leave(*ck, {kGid3}));
  Check(*ck, {kGid4});
  ASSERT_TRUE(Leave(*ck, {kGid4}));
  Check(*ck, {});
}

TEST(ShardCtrler4A, ConcurrentLeaveJoin) {
  Cluster cluster(Options());
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  BasicLeaveJoin(*ck);
  const std::set<uint64_t> gids = ConcurrentLeaveJoin(cluster);
  Check(*ck, gids);
  // Three configurations per clerk, none lost, none doubled.
  EXPECT_EQ(Query(*ck).num(), 4u + 3 * kParallel);
}

TEST(ShardCtrler4A, MinimalTransfersAfterJoins) {
  Cluster cluster(Options());
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  const std::set<uint64_t> gids = ConcurrentLeaveJoin(cluster);
  Check(*ck, gids);
  MinimalTransfersAfterJoins(*ck, gids);
}

TEST(ShardCtrler4A, MinimalTransfersAfterLeaves) {
  Cluster cluster(Options());
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  const std::set<uint64_t> gids = ConcurrentLeaveJoin(cluster);
  const pb::Config c2 = MinimalTransfersAfterJoins(*ck, gids);
  for (uint64_t i = 0; i < 5; ++i) EXPECT_TRUE(Leave(*ck, {kParallel + 1 + i}));
  const pb::Config c3 = Query(*ck);
  EXPECT_EQ(c3.num(), c2.num() + 5);
  EXPECT_EQ(CheckGroups(c3, gids), "");
  // Groups that stay keep every shard they had.
  for (int s = 0; s < kShards; ++s) {
    if (gids.contains(c2.shards(s))) {
      EXPECT_EQ(c3.shards(s), c2.shards(s)) << "non-minimal transfer after Leave()s: shard " << s;
    }
  }
}

// Beyond the lab: with 10 groups over 10 shards the lab's joins of 11..15
// move nothing, so minimal transfers are checked here where they must move
// shards: 3 groups, then groups joining and leaving one by one and all at once.
TEST(ShardCtrler4A, MinimalTransfersWithFewGroups) {
  Cluster cluster(Options());
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  ASSERT_TRUE(Join(*ck, {{1, {"a"}}, {2, {"b"}}, {3, {"c"}}}));
  for (uint64_t gid = 4; gid <= 7; ++gid) ASSERT_TRUE(Join(*ck, {{gid, {absl::StrCat(gid)}}}));
  for (uint64_t gid = 4; gid <= 7; ++gid) ASSERT_TRUE(Leave(*ck, {gid}));
  ASSERT_TRUE(Join(*ck, {{4, {"d"}}, {5, {"e"}}, {6, {"f"}}, {7, {"g"}}}));
  ASSERT_TRUE(Leave(*ck, {1, 5}));
  ASSERT_TRUE(Leave(*ck, {2, 3, 4}));
  Check(*ck, {6, 7});
}

// ---------------------------------------------------------------------------
// TestMulti
// ---------------------------------------------------------------------------

TEST(ShardCtrler4A, MultiGroupJoinLeave) {
  Cluster cluster(Options());
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  MultiGroupJoinLeave(*ck);
}

TEST(ShardCtrler4A, ConcurrentMultiLeaveJoin) {
  Cluster cluster(Options());
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  MultiGroupJoinLeave(*ck);
  const std::set<uint64_t> gids = ConcurrentMultiLeaveJoin(cluster);
  Check(*ck, gids);
  EXPECT_EQ(Query(*ck).num(), 4u + 2 * kParallel);
}

TEST(ShardCtrler4A, MinimalTransfersAfterMultijoins) {
  Cluster cluster(Options());
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  const std::set<uint64_t> gids = ConcurrentMultiLeaveJoin(cluster);
  Check(*ck, gids);
  MinimalTransfersAfterMultijoins(*ck, gids);
}

TEST(ShardCtrler4A, MinimalTransfersAfterMultileaves) {
  Cluster cluster(Options());
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  const std::set<uint64_t> gids = ConcurrentMultiLeaveJoin(cluster);
  const pb::Config c2 = MinimalTransfersAfterMultijoins(*ck, gids);
  std::vector<uint64_t> l;
  for (uint64_t i = 0; i < 5; ++i) l.push_back(kParallel + 1 + i);
  ASSERT_TRUE(Leave(*ck, l));
  const pb::Config c3 = Query(*ck);
  EXPECT_EQ(c3.num(), c2.num() + 1);
  EXPECT_EQ(CheckGroups(c3, gids), "");
  for (int s = 0; s < kShards; ++s) {
    if (gids.contains(c2.shards(s))) {
      EXPECT_EQ(c3.shards(s), c2.shards(s))
          << "non-minimal transfer after multileaves: shard " << s;
    }
  }
}

TEST(ShardCtrler4A, CheckSameConfigOnServers) {
  Cluster cluster(Options());
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  const std::set<uint64_t> gids = ConcurrentMultiLeaveJoin(cluster);
  absl::StatusOr<uint64_t> last = ck->Join({{7, {"7a", "7b"}}});
  ASSERT_TRUE(last.ok()) << last.status();

  int leader = -1;
  for (const absl::Time deadline = absl::Now() + absl::Seconds(10);
       leader < 0 && absl::Now() < deadline; absl::SleepFor(absl::Milliseconds(10))) {
    leader = cluster.Leader();
  }
  ASSERT_GE(leader, 0) << "Leader not found";
  const pb::Config c = Query(*ck);  // the configuration the leader claims
  EXPECT_EQ(c.num(), *last) << "a read after an acknowledged Join must see it";
  cluster.ShutdownServer(leader);
  const pb::Config c1 = Query(*ck);  // from the new leader
  EXPECT_EQ(ConfigDifference(c, c1), "");
  std::set<uint64_t> all = gids;
  all.insert(7);
  EXPECT_EQ(CheckGroups(c1, all), "");
  const int new_leader = cluster.Leader();
  EXPECT_NE(new_leader, leader);
  EXPECT_GE(new_leader, 0);
}

// ---------------------------------------------------------------------------
// Beyond the lab: bad requests change nothing; a gid may join again.
// ---------------------------------------------------------------------------

TEST(ShardCtrler4A, InvalidRequestsChangeNothing) {
  Cluster cluster(Options());
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  ASSERT_TRUE(Join(*ck, {{1, {"a"}}, {2, {"b"}}}));
  const pb::Config before = Query(*ck);
  EXPECT_EQ(ck->Join({{1, {"again"}}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ck->Join({{0, {"zero"}}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ck->Join({{3, {}}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ck->Leave({9}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ck->Move(0, 9).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ck->Move(kShards, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ConfigDifference(before, Query(*ck)), "");
  // The clerk's session goes on working after refused requests.
  ASSERT_TRUE(Leave(*ck, {1}));
  ASSERT_TRUE(Join(*ck, {{1, {"back"}}}));
  EXPECT_EQ(ServersOf(Query(*ck), 1), std::vector<std::string>{"back"});
  Check(*ck, {1, 2});
}

// A shardkv group's membership changed: Servers replaces its list through the
// log (a new configuration, no shard moved), a repeat changes nothing, and the
// change survives the leader's crash.
TEST(ShardCtrler4A, ServersReplacesAGroupsListWithoutMovingShards) {
  Cluster cluster(Options());
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  ASSERT_TRUE(Join(*ck, {{1, {"1a", "1b", "1c"}}, {2, {"2a"}}}));
  const pb::Config before = Query(*ck);
  absl::StatusOr<uint64_t> made = ck->Servers(1, {"1a", "1c", "1d"});
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ(*made, before.num() + 1);
  const pb::Config after = Query(*ck);
  EXPECT_EQ(after.num(), *made);
  EXPECT_EQ(ServersOf(after, 1), (std::vector<std::string>{"1a", "1c", "1d"}));
  EXPECT_EQ(ServersOf(after, 2), std::vector<std::string>{"2a"});
  for (int s = 0; s < kShards; ++s) EXPECT_EQ(after.shards(s), before.shards(s)) << "shard " << s;
  // The same list again: nothing new.
  absl::StatusOr<uint64_t> again = ck->Servers(1, {"1a", "1c", "1d"});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *made);
  EXPECT_EQ(ck->Servers(9, {"9a"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ck->Servers(1, {}).status().code(), absl::StatusCode::kInvalidArgument);

  int leader = -1;
  for (const absl::Time deadline = absl::Now() + absl::Seconds(10);
       leader < 0 && absl::Now() < deadline; absl::SleepFor(absl::Milliseconds(10))) {
    leader = cluster.Leader();
  }
  ASSERT_GE(leader, 0) << "Leader not found";
  cluster.ShutdownServer(leader);
  EXPECT_EQ(ConfigDifference(after, Query(*ck)), "");
}

// ---------------------------------------------------------------------------
// The checks themselves: a check that accepts everything is what made the
// lab's minimal-transfer tests vacuous.
// ---------------------------------------------------------------------------

pb::Config Config(uint64_t num, std::vector<uint64_t> shards, std::vector<uint64_t> gids) {
  pb::Config c;
  c.set_num(num);
  for (uint64_t gid : shards) c.add_shards(gid);
  for (uint64_t gid : gids) {
    pb::Group* g = c.add_groups();
    g->set_gid(gid);
    g->add_servers(absl::StrCat("s", gid));
  }
  return c;
}

TEST(Lab4aChecks, TransitionProblemRejectsNonMinimalOrMisdirectedMoves) {
  const pb::Config two = Config(5, {1, 1, 1, 1, 1, 2, 2, 2, 2, 2}, {1, 2});
  // Join 3: 3 shards must go to 3, from both old groups (5,5 -> 4,3,3 or 3,4,3).
  EXPECT_EQ(TransitionProblem(two, Config(6, {1, 1, 1, 1, 3, 2, 2, 2, 3, 3}, {1, 2, 3}), {3}, {}),
            "");
  EXPECT_EQ(MinimalMoves(two, {1, 2, 3}), 3);
  // Balanced, but shard 0 also moved between the old groups.
  EXPECT_NE(TransitionProblem(two, Config(6, {2, 1, 1, 1, 3, 1, 2, 2, 3, 3}, {1, 2, 3}), {3}, {}),
            "");
  // Balanced and only to the new group, but one shard more than needed.
  EXPECT_NE(TransitionProblem(two, Config(6, {1, 1, 1, 3, 3, 2, 2, 2, 3, 3}, {1, 2, 3}), {3}, {}),
            "");
  // Unbalanced.
  EXPECT_NE(TransitionProblem(two, Config(6, {1, 1, 1, 1, 1, 2, 2, 2, 3, 3}, {1, 2, 3}), {3}, {}),
            "");
  // Wrong number, wrong groups.
  EXPECT_NE(TransitionProblem(two, Config(7, {1, 1, 1, 1, 3, 2, 2, 2, 3, 3}, {1, 2, 3}), {3}, {}),
            "");
  EXPECT_NE(TransitionProblem(two, Config(6, {1, 1, 1, 1, 3, 2, 2, 2, 3, 3}, {1, 2, 3}), {4}, {}),
            "");

  const pb::Config three = Config(6, {1, 1, 1, 1, 3, 2, 2, 2, 3, 3}, {1, 2, 3});
  EXPECT_EQ(TransitionProblem(three, Config(7, {1, 1, 1, 1, 2, 2, 2, 2, 1, 2}, {1, 2}), {}, {3}),
            "");
  // A shard of a staying group moved too.
  EXPECT_NE(TransitionProblem(three, Config(7, {2, 1, 1, 1, 1, 2, 2, 2, 1, 2}, {1, 2}), {}, {3}),
            "");
  // Leaving everything: every shard back to 0.
  EXPECT_EQ(TransitionProblem(Config(1, std::vector<uint64_t>(10, 1), {1}),
                              Config(2, std::vector<uint64_t>(10, 0), {}), {}, {1}),
            "");
  // Servers of a joining group as given, in order.
  EXPECT_NE(TransitionProblem(two, Config(6, {1, 1, 1, 1, 3, 2, 2, 2, 3, 3}, {1, 2, 3}), {3}, {},
                              {{3, {"other"}}}),
            "");
}

TEST(Lab4aChecks, CheckGroupsAndConfigDifference) {
  EXPECT_EQ(CheckGroups(Config(0, std::vector<uint64_t>(10, 0), {}), {}), "");
  EXPECT_NE(CheckGroups(Config(1, std::vector<uint64_t>(10, 1), {1}), {2}), "");
  EXPECT_NE(CheckGroups(Config(1, {1, 1, 1, 1, 1, 1, 1, 1, 1, 0}, {1}), {1}), "");  // unassigned
  EXPECT_NE(CheckGroups(Config(1, {1, 1, 1, 1, 1, 1, 1, 1, 1, 9}, {1}), {1}), "");  // absent gid
  EXPECT_NE(CheckGroups(Config(1, {1, 1, 1, 1, 1, 1, 1, 2, 2, 2}, {1, 2}), {1, 2}), "");
  EXPECT_NE(CheckGroups(Config(1, std::vector<uint64_t>(9, 1), {1}), {1}), "");  // 9 shards
  pb::Config a = Config(3, {1, 1, 1, 1, 1, 2, 2, 2, 2, 2}, {1, 2});
  pb::Config b = a;
  EXPECT_EQ(ConfigDifference(a, b), "");
  b.mutable_groups(0)->add_servers("extra");
  EXPECT_NE(ConfigDifference(a, b), "");
  b = a;
  b.mutable_groups(1)->add_servers("t");
  a.mutable_groups(1)->add_servers("u");
  EXPECT_NE(ConfigDifference(a, b), "");  // order and content of servers
}

}  // namespace
}  // namespace ds::ctrl::lab4a
