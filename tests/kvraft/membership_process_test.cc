// Membership changes of a running kvraft group, with the real kvraft-server
// and kvctl binaries, under a load of recording clients: a dead replica is
// replaced (removed, a new member added as a learner with an empty data
// directory, caught up by snapshot, promoted), the leader removes itself, the
// group grows from three to five and shrinks back. Throughout, the clients'
// history must be linearizable and every acknowledged append present exactly
// once; at the end every live replica must report the same configuration.
// The shard controller's group changes the same way (kvctl --controllers).
// And the guards: a data directory is refused under another member id, and a
// replica restarted empty under its old id takes no part.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/replica_client.h"
#include "gtest/gtest.h"
#include "tests/common/kvctl_runner.h"
#include "tests/kvraft/process_cluster.h"

namespace ds::kv {
namespace {

using ::ds::testing::Failed;
using ::ds::testing::KvctlResult;
using ::ds::testing::KvctlRunner;
using ::ds::testing::Printed;
using testing::ExpectAppendsExactlyOnce;
using testing::ExpectLinearizable;
using testing::kKvServer;
using testing::KvReader;
using testing::KvWorkload;
using testing::ProcessCluster;

// Raft timing for tests: elections within about a second.
std::vector<std::string> FastRaft(std::vector<std::string> more = {}) {
  std::vector<std::string> flags = {"--tick-interval=50ms", "--election-ticks=10",
                                    "--log-level=warn"};
  flags.insert(flags.end(), more.begin(), more.end());
  return flags;
}

// A member as the tests expect it: replica index `i` of the cluster (id i + 1).
struct Expected {
  int index;
  bool learner = false;
};

// The configuration as "ID HOST:PORT voter|learner" lines, by id: what kvctl
// member list prints, and how the tests compare configurations.
std::string ExpectedText(const ProcessCluster& cluster, std::vector<Expected> members) {
  std::sort(members.begin(), members.end(),
            [](const Expected& a, const Expected& b) { return a.index < b.index; });
  std::string out;
  for (const Expected& m : members) {
    absl::StrAppend(&out, m.index + 1, " ", cluster.endpoints()[m.index], " ",
                    m.learner ? "learner" : "voter", "\n");
  }
  return out;
}

std::string ExpectedJson(const ProcessCluster& cluster, std::vector<Expected> members) {
  std::sort(members.begin(), members.end(),
            [](const Expected& a, const Expected& b) { return a.index < b.index; });
  std::vector<std::string> items;
  for (const Expected& m : members) {
    items.push_back(absl::StrCat("{\"id\":", m.index + 1, ",\"address\":\"",
                                 cluster.endpoints()[m.index], "\",\"role\":\"",
                                 m.learner ? "learner" : "voter", "\"}"));
  }
  return absl::StrCat("[", absl::StrJoin(items, ","), "]\n");
}

// A MemberList answer in the same text form.
std::string AsText(const rsm::pb::MemberListResponse& list) {
  std::vector<rsm::pb::Member> members(list.members().begin(), list.members().end());
  std::sort(members.begin(), members.end(),
            [](const auto& a, const auto& b) { return a.id() < b.id(); });
  std::string out;
  for (const rsm::pb::Member& m : members) {
    absl::StrAppend(&out, m.id(), " ", m.address(), " ", m.learner() ? "learner" : "voter", "\n");
  }
  return out;
}

class MembershipTest : public ::testing::Test {
 protected:
  // kvctl against every endpoint of the cluster (dead and future ones
  // included: kvctl asks them all at once who leads).
  KvctlResult Kvctl(const ProcessCluster& cluster, std::vector<std::string> args) {
    args.insert(args.begin(), {"--endpoints=" + cluster.endpoints_flag(), "--timeout=20s"});
    return kvctl_.Run(args);
  }

  // `kvctl member promote ID`, again while the leader refuses because the
  // learner has not caught up yet (FAILED_PRECONDITION: exit 1, "not caught
  // up"), for up to `limit`.
  KvctlResult Promote(const ProcessCluster& cluster, int index,
                      absl::Duration limit = absl::Seconds(60)) {
    const absl::Time deadline = absl::Now() + limit;
    KvctlResult r;
    int attempts = 0;
    do {
      r = Kvctl(cluster, {"member", "promote", absl::StrCat(index + 1)});
      ++attempts;
      if (r.code != 1 || !absl::StrContains(r.err, "not caught up")) break;
      absl::SleepFor(absl::Milliseconds(200));
    } while (absl::Now() < deadline);
    std::printf("  member promote %d: %d attempt(s), the last: exit %d %s", index + 1, attempts,
                r.code, r.err.c_str());
    if (r.err.empty()) std::printf("\n");
    return r;
  }

  // Waits until replica `index` has applied what the leader had committed
  // when the wait began (under load the leader moves on meanwhile).
  ::testing::AssertionResult CaughtUp(ProcessCluster& cluster, int index,
                                      absl::Duration limit = absl::Seconds(60)) {
    const absl::Time deadline = absl::Now() + limit;
    const int leader = cluster.WaitForLeader();
    if (leader < 0) return ::testing::AssertionFailure() << "no leader";
    auto leader_status = cluster.Status(leader);
    if (!leader_status.ok()) return ::testing::AssertionFailure() << leader_status.status();
    uint64_t applied = 0;
    while (absl::Now() < deadline) {
      auto st = cluster.Status(index);
      if (st.ok()) applied = st->applied_index();
      if (applied >= leader_status->commit_index()) return ::testing::AssertionSuccess();
      absl::SleepFor(absl::Milliseconds(100));
    }
    return ::testing::AssertionFailure()
           << "replica " << index + 1 << " applied " << applied << " of the leader's "
           << leader_status->commit_index() << "; its log:\n"
           << cluster.LogTail(index);
  }

  // Every replica of `live` answers MemberList (from its own view, not
  // redirected) with `want` and no change in progress, within `limit`:
  // followers learn a configuration from the leader's log.
  void ExpectSameConfigurationOn(ProcessCluster& cluster, const std::vector<int>& live,
                                 const std::string& want,
                                 absl::Duration limit = absl::Seconds(20)) {
    const absl::Time deadline = absl::Now() + limit;
    for (int i : live) {
      std::string got;
      bool committed = false;
      while (true) {
        auto list = client::ReplicaMemberList(cluster.endpoints()[i], absl::Seconds(2));
        if (list.ok()) {
          got = AsText(*list);
          committed = list->conf_committed();
        } else {
          got = list.status().ToString();
        }
        if ((got == want && committed) || absl::Now() > deadline) break;
        absl::SleepFor(absl::Milliseconds(100));
      }
      EXPECT_EQ(got, want) << "replica " << i + 1 << "'s configuration";
      EXPECT_TRUE(committed) << "replica " << i + 1 << " still sees a change in progress";
    }
  }

  // The load's checks: enough progress, a linearizable history, every
  // acknowledged append exactly once.
  void CheckLoad(KvWorkload& load, const ProcessCluster& cluster) {
    load.Stop();
    const std::vector<lincheck::Operation> history = load.history().Snapshot();
    std::printf("  %lld operations acknowledged, %zu recorded\n",
                static_cast<long long>(load.acknowledged()), history.size());
    EXPECT_GT(load.acknowledged(), 50) << "the cluster made too little progress";
    ExpectLinearizable(history);
    ExpectAppendsExactlyOnce(load.appends(), KvReader(cluster));
  }

  KvctlRunner kvctl_;
};

// The procedure of docs/operations.md, "Replacing a dead machine": replica 3
// is lost with its disk; it is removed, replica 4 is added as a learner and
// started empty with --initial-cluster-state=existing, catches up by snapshot
// (the log it missed was compacted away), is promoted; then the leader is
// removed and stopped.
TEST_F(MembershipTest, ReplaceADeadReplicaUnderLoad) {
  ProcessCluster cluster(
      kKvServer, 3,
      FastRaft({"--snapshot-threshold-bytes=20000", "--snapshot-catchup-entries=100"}));
  const int r4 = cluster.Add();
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  KvWorkload load(cluster, 4, 4);

  // Enough load that replicas 1 and 2 (one of which leads from now on) have
  // compacted their logs: a new member needs a snapshot.
  bool compacted = false;
  for (absl::Time deadline = absl::Now() + absl::Seconds(60);
       !compacted && absl::Now() < deadline;) {
    absl::SleepFor(absl::Milliseconds(250));
    auto s1 = cluster.Status(0);
    auto s2 = cluster.Status(1);
    compacted = s1.ok() && s2.ok() && s1->snapshot_index() > 0 && s2->snapshot_index() > 0;
  }
  ASSERT_TRUE(compacted) << "replicas 1 and 2 never took a snapshot";

  // Machine 3 dies with its disk.
  cluster.Kill(2);
  cluster.WipeDataDir(2);
  EXPECT_TRUE(Printed(Kvctl(cluster, {"member", "remove", "3"}),
                      "member 3 removed\n" + ExpectedText(cluster, {{0}, {1}})));

  const std::string r4_address = cluster.endpoints()[r4];
  EXPECT_TRUE(Printed(
      Kvctl(cluster, {"member", "add", "4=" + r4_address, "--learner"}),
      "member 4 added as learner\n" + ExpectedText(cluster, {{0}, {1}, {r4, /*learner=*/true}})));
  EXPECT_TRUE(Printed(Kvctl(cluster, {"-w", "json", "member", "list"}),
                      ExpectedJson(cluster, {{0}, {1}, {r4, true}})));
  // Ids are never reused: 3 cannot come back, not even at a new address.
  EXPECT_TRUE(Failed(Kvctl(cluster, {"member", "add", "3=" + r4_address, "--learner"}), 1,
                     "cannot be used again"));

  cluster.StartAs(r4, 4, absl::StrJoin({cluster.peer(0), cluster.peer(1), cluster.peer(r4)}, ","),
                  {"--initial-cluster-state=existing"});
  ASSERT_TRUE(cluster.WaitHealthy(r4).ok()) << cluster.LogTail(r4);
  ASSERT_TRUE(CaughtUp(cluster, r4));
  auto r4_status = cluster.Status(r4);
  ASSERT_TRUE(r4_status.ok()) << r4_status.status();
  EXPECT_GT(r4_status->snapshot_index(), 0u) << "replica 4 caught up without a snapshot";

  EXPECT_TRUE(Printed(Promote(cluster, r4),
                      "member 4 promoted to voter\n" + ExpectedText(cluster, {{0}, {1}, {r4}})));
  absl::SleepFor(absl::Seconds(1));

  // The leader removes itself; it is stopped once the removal is acknowledged.
  const int leader = cluster.WaitForLeader();
  ASSERT_GE(leader, 0);
  std::vector<Expected> rest;
  for (int i : {0, 1, r4}) {
    if (i != leader) rest.push_back({i});
  }
  EXPECT_TRUE(
      Printed(Kvctl(cluster, {"member", "remove", absl::StrCat(leader + 1)}),
              absl::StrCat("member ", leader + 1, " removed\n") + ExpectedText(cluster, rest)));
  cluster.Kill(leader);
  absl::SleepFor(absl::Seconds(2));  // the load goes on under the new leader

  CheckLoad(load, cluster);
  ExpectSameConfigurationOn(cluster, {rest[0].index, rest[1].index}, ExpectedText(cluster, rest));
  EXPECT_TRUE(
      Printed(Kvctl(cluster, {"-w", "json", "member", "list"}), ExpectedJson(cluster, rest)));
}

// Two members are added (learners, started, promoted), then two of the
// original three removed, one at a time: the leader (if original) after it
// was killed, and one that runs until its removal is acknowledged.
TEST_F(MembershipTest, GrowThreeToFiveAndShrinkBackUnderLoad) {
  ProcessCluster cluster(kKvServer, 3, FastRaft());
  const int r4 = cluster.Add();
  const int r5 = cluster.Add();
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  KvWorkload load(cluster, 4, 4);
  absl::SleepFor(absl::Seconds(1));

  std::vector<Expected> members = {{0}, {1}, {2}};
  for (int r : {r4, r5}) {
    const std::string id = absl::StrCat(r + 1);
    members.push_back({r, /*learner=*/true});
    EXPECT_TRUE(
        Printed(Kvctl(cluster, {"member", "add", id + "=" + cluster.endpoints()[r], "--learner"}),
                "member " + id + " added as learner\n" + ExpectedText(cluster, members)));
    // It knows the members of the original group and itself.
    cluster.StartAs(
        r, r + 1,
        absl::StrJoin({cluster.peer(0), cluster.peer(1), cluster.peer(2), cluster.peer(r)}, ","),
        {"--initial-cluster-state=existing"});
  }
  for (int r : {r4, r5}) {
    ASSERT_TRUE(cluster.WaitHealthy(r).ok()) << cluster.LogTail(r);
    ASSERT_TRUE(CaughtUp(cluster, r));
    for (Expected& m : members) {
      if (m.index == r) m.learner = false;
    }
    EXPECT_TRUE(Printed(
        Promote(cluster, r),
        absl::StrCat("member ", r + 1, " promoted to voter\n") + ExpectedText(cluster, members)));
  }
  ExpectSameConfigurationOn(cluster, {0, 1, 2, r4, r5}, ExpectedText(cluster, members));
  absl::SleepFor(absl::Seconds(1));

  // Two original members go. First the leader if it is one of them, killed
  // (-9) before its removal: kvctl retries through the election and until
  // the new leader has committed an entry of its term. Then another one,
  // removed while it runs and stopped once that is acknowledged.
  const int leader = cluster.WaitForLeader();
  ASSERT_GE(leader, 0);
  const int first = leader <= 2 ? leader : 0;
  const int second = first == 0 ? 1 : 0;
  cluster.Kill(first);
  for (int gone : {first, second}) {
    members.erase(std::find_if(members.begin(), members.end(),
                               [gone](const Expected& m) { return m.index == gone; }));
    EXPECT_TRUE(
        Printed(Kvctl(cluster, {"member", "remove", absl::StrCat(gone + 1)}),
                absl::StrCat("member ", gone + 1, " removed\n") + ExpectedText(cluster, members)));
    cluster.Kill(gone);
    absl::SleepFor(absl::Seconds(1));
  }
  absl::SleepFor(absl::Seconds(1));
  std::vector<int> live;
  for (const Expected& m : members) live.push_back(m.index);

  CheckLoad(load, cluster);
  ExpectSameConfigurationOn(cluster, live, ExpectedText(cluster, members));
  EXPECT_TRUE(
      Printed(Kvctl(cluster, {"-w", "json", "member", "list"}), ExpectedJson(cluster, members)));
}

// With --controllers and no --endpoints, kvctl member acts on the shard
// controller's own replica group, which changes members like any other: a
// member added, caught up, promoted, an original one removed, and the
// controller serving on.
TEST_F(MembershipTest, ControllerGroupThroughTheControllersFlag) {
  ProcessCluster ctrl("shardctrler-server", 3, FastRaft());
  const int r4 = ctrl.Add();
  ASSERT_TRUE(ctrl.WaitAllHealthy().ok());
  auto kvctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--controllers=" + ctrl.endpoints_flag(), "--timeout=20s"});
    return kvctl_.Run(args);
  };
  EXPECT_TRUE(Printed(kvctl({"member", "list"}), ExpectedText(ctrl, {{0}, {1}, {2}})));
  EXPECT_TRUE(Printed(
      kvctl({"member", "add", "4=" + ctrl.endpoints()[r4], "--learner"}),
      "member 4 added as learner\n" + ExpectedText(ctrl, {{0}, {1}, {2}, {r4, /*learner=*/true}})));
  ctrl.StartAs(r4, 4, absl::StrJoin({ctrl.peer(0), ctrl.peer(1), ctrl.peer(2), ctrl.peer(r4)}, ","),
               {"--initial-cluster-state=existing"});
  ASSERT_TRUE(ctrl.WaitHealthy(r4).ok()) << ctrl.LogTail(r4);
  ASSERT_TRUE(CaughtUp(ctrl, r4));
  EXPECT_TRUE(Printed(kvctl({"member", "promote", "4"}),
                      "member 4 promoted to voter\n" + ExpectedText(ctrl, {{0}, {1}, {2}, {r4}})));
  EXPECT_TRUE(Printed(kvctl({"member", "remove", "1"}),
                      "member 1 removed\n" + ExpectedText(ctrl, {{1}, {2}, {r4}})));
  ctrl.Kill(0);
  ExpectSameConfigurationOn(ctrl, {1, 2, r4}, ExpectedText(ctrl, {{1}, {2}, {r4}}));
  const KvctlResult query = kvctl({"ctrl", "query"});
  EXPECT_EQ(query.code, 0) << query;
}

// A replica restarted with an empty data directory under its old id (its
// disk replaced, the procedure skipped) has forgotten its votes and log. It
// must take no part: it stops at the first heartbeat whose commit index is
// beyond its (empty) log, as etcd does, or its peers refuse its Raft traffic
// (they knew its data directory's incarnation); either way a log says why,
// and the group goes on with every acknowledged write.
TEST_F(MembershipTest, AnEmptyDataDirectoryUnderAnOldIdTakesNoPart) {
  ProcessCluster cluster(kKvServer, 3, FastRaft());
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  auto clerk = testing::NewKvClerk(cluster, absl::Seconds(10));
  ASSERT_TRUE(clerk->Put("k", "v").ok());
  const int leader = cluster.WaitForLeader();
  ASSERT_GE(leader, 0);
  const int lost = (leader + 1) % 3;
  cluster.Kill(lost);
  cluster.WipeDataDir(lost);
  cluster.Start(lost);  // same id, --peers and flags, empty data directory

  const std::vector<std::string> reasons = {"comes back with another data directory",
                                            "Was the raft log corrupted, truncated, or lost?"};
  bool told = false;
  for (absl::Time deadline = absl::Now() + absl::Seconds(20); !told && absl::Now() < deadline;) {
    for (int i = 0; i < 3; ++i) {
      const std::string log = cluster.LogTail(i, 20000);
      for (const std::string& why : reasons) told = told || absl::StrContains(log, why);
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  std::string state = "running";
  if (std::optional<int> code = cluster.process(lost)->TryWait(); code.has_value()) {
    state = absl::StrCat("exited with status ", *code);
  }
  EXPECT_TRUE(told) << "no log says why replica " << lost + 1 << " (" << state
                    << ") takes no part; it logged:\n"
                    << cluster.LogTail(lost) << "\nthe leader, replica " << leader + 1
                    << ", logged:\n"
                    << cluster.LogTail(leader);

  ASSERT_TRUE(clerk->Append("k", "+w").ok());
  auto r = clerk->Get("k");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value, "v+w");
  if (auto st = cluster.Status(lost); st.ok()) {
    EXPECT_NE(st->role(), rsm::pb::ROLE_LEADER);
  }
}

// A data directory records its member id: started under another id it is
// refused (exit status 2, naming both), and still works under its own.
TEST_F(MembershipTest, RestartWithAnotherIdIsRefused) {
  ProcessCluster cluster(kKvServer, 1, FastRaft());
  const int other = cluster.Add();
  ASSERT_TRUE(cluster.WaitHealthy(0).ok());
  ASSERT_TRUE(testing::NewKvClerk(cluster, absl::Seconds(10))->Put("k", "v").ok());
  ASSERT_EQ(cluster.Terminate(0), 0);

  const std::string peers = absl::StrJoin({cluster.peer(0), cluster.peer(other)}, ",");
  cluster.StartAs(0, 2, peers);
  const std::optional<int> code = cluster.process(0)->WaitFor(absl::Seconds(30));
  ASSERT_TRUE(code.has_value()) << "a replica started on replica 1's data under --id=2 runs";
  EXPECT_EQ(*code, 2) << cluster.LogTail(0);
  const std::string log = cluster.LogTail(0);
  EXPECT_TRUE(absl::StrContains(log, "member 1") && absl::StrContains(log, "--id=2"))
      << "the refusal should name the directory's id (1) and --id=2:\n"
      << log;

  cluster.Start(0);
  ASSERT_TRUE(cluster.WaitHealthy(0).ok()) << cluster.LogTail(0);
  auto r = testing::NewKvClerk(cluster, absl::Seconds(10))->Get("k");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value, "v");
}

}  // namespace
}  // namespace ds::kv
