// Multi-process tests of shardctrler-server: three real replicas on loopback;
// concurrent clients (CtrlClerk threads and one-shot `kvctl ctrl` processes)
// join and leave distinct groups while the leader is killed with -9 and
// restarted. Afterwards every replica must hold the same configuration
// history, and every client operation must be accounted for: an
// acknowledged Join or Leave made exactly the configuration it reported, no
// operation took effect twice, nothing changed that no client asked for, and
// every configuration after a Join or Leave is balanced with minimal moves.
// The checker is tested too (CheckOpsTest), on histories the pure state
// machine makes. Also: a replica restarted with another --shards refuses to
// start.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/ctrl_client.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"
#include "shardctrler/ctrl_state_machine.h"
#include "tests/common/process_cluster.h"
#include "tests/shardctrler/lab4a_harness.h"

namespace ds::ctrl {
namespace {

// A file's contents, "" if it cannot be read (logs and outputs in messages).
std::string ReadLog(const std::string& path) { return common::ReadWholeFile(path).value_or(""); }

using client::GroupServers;
using ::ds::testing::ProcessCluster;
using lab4a::ConfigDifference;
using lab4a::GroupIds;
using lab4a::Malformed;
using lab4a::TransitionProblem;

constexpr char kServer[] = "shardctrler-server";

// Elections within about a second; snapshots every few dozen configurations,
// so restarted replicas restore from a snapshot and replay a log tail.
const std::vector<std::string> kFlags = {"--tick-interval=50ms", "--election-ticks=10",
                                         "--log-level=warn", "--snapshot-threshold-bytes=16384"};

// Added to kFlags on restart: the replica votes but does not campaign for
// 20-40 s (400-800 ticks of 50 ms). A fresh process knows no leader, so
// CheckQuorum's leader stickiness does not stop it from voting.
const std::vector<std::string> kNeverCampaign = {"--election-ticks=400"};

std::string Logs(ProcessCluster& cluster) {
  std::string out;
  for (int i = 0; i < cluster.size(); ++i) {
    absl::StrAppend(&out, "--- replica ", i + 1, " log tail:\n", cluster.LogTail(i), "\n");
  }
  return out;
}

std::unique_ptr<client::CtrlClerk> NewClerk(const ProcessCluster& cluster,
                                            absl::Duration op_timeout) {
  return ::ds::testing::MustCreate<client::CtrlClerk>(
      client::ClerkOptions{.endpoints = cluster.endpoints(),
                           .operation_timeout = op_timeout,
                           .attempt_timeout = absl::Milliseconds(500)});
}

// Every configuration, 0 to the latest, as the current leader serves them.
absl::StatusOr<std::vector<pb::Config>> ReadHistory(client::CtrlClerk& clerk) {
  absl::StatusOr<uint64_t> latest = clerk.Latest();
  if (!latest.ok()) return latest.status();
  std::vector<pb::Config> history;
  for (uint64_t num = 0; num <= *latest; ++num) {
    absl::StatusOr<pb::Config> c = clerk.Query(static_cast<int64_t>(num));
    if (!c.ok()) return c.status();
    history.push_back(*std::move(c));
  }
  return history;
}

// ---------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------

// One Join or Leave a client issued, and what the client learned of it.
struct Op {
  enum Outcome { kAcked, kUnknown, kRefused };
  std::string client;  // "clerk 2", "kvctl 1"
  bool join = false;
  GroupServers groups;      // join: the groups, with their servers
  std::set<uint64_t> gids;  // the gids it names
  Outcome outcome = kUnknown;
  uint64_t num = 0;   // kAcked: the configuration it made
  std::string error;  // otherwise: what the client saw

  std::string Describe() const {
    return absl::StrCat(client, " ", join ? "join" : "leave", " {", absl::StrJoin(gids, ","), "}",
                        outcome == kAcked     ? absl::StrCat(" acknowledged as ", num)
                        : outcome == kRefused ? absl::StrCat(" refused: ", error)
                                              : absl::StrCat(" outcome unknown: ", error));
  }
};

// Clients joining and leaving groups until Stop(). Every gid is joined at
// most once by one client and left at most once, by that client (so each
// configuration change maps to one operation by its gids). Each client keeps
// at most two of its groups: it joins a fresh one, then leaves the previous.
class Workload {
 public:
  Workload(ProcessCluster* cluster, int clerks, int kvctls) : cluster_(cluster) {
    for (int c = 0; c < clerks; ++c) threads_.emplace_back([this, c] { RunClerk(c); });
    for (int k = 0; k < kvctls; ++k) threads_.emplace_back([this, k] { RunKvctl(k); });
  }
  ~Workload() { Stop(); }

  void Stop() {
    stop_ = true;
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

  std::vector<Op> ops() {
    absl::MutexLock lock(&mu_);
    return ops_;
  }

 private:
  static std::vector<std::string> ServersOf(uint64_t gid) {
    return {absl::StrCat("g", gid, "a:7001"), absl::StrCat("g", gid, "b:7002"),
            absl::StrCat("g", gid, "c:7003")};
  }

  void Record(Op op) {
    absl::MutexLock lock(&mu_);
    ops_.push_back(std::move(op));
  }

  static void Finish(Op& op, const absl::StatusOr<uint64_t>& r) {
    if (r.ok()) {
      op.outcome = Op::kAcked;
      op.num = *r;
    } else {
      op.outcome =
          r.status().code() == absl::StatusCode::kInvalidArgument ? Op::kRefused : Op::kUnknown;
      op.error = r.status().ToString();
    }
  }

  // A CtrlClerk in a thread: gids 1000(c+1), 1000(c+1) + 1, ...
  void RunClerk(int c) {
    std::unique_ptr<client::CtrlClerk> clerk = NewClerk(*cluster_, absl::Seconds(5));
    uint64_t next = 1000 * static_cast<uint64_t>(c + 1);
    std::optional<uint64_t> previous;
    while (!stop_) {
      const uint64_t gid = next++;
      Op join{.client = absl::StrCat("clerk ", c), .join = true};
      join.groups[gid] = ServersOf(gid);
      join.gids = {gid};
      Finish(join, clerk->Join(join.groups));
      Record(join);
      if (previous.has_value()) {
        Op leave{.client = join.client, .join = false, .gids = {*previous}};
        Finish(leave, clerk->Leave({*previous}));
        Record(leave);
      }
      previous = gid;
      absl::SleepFor(absl::Milliseconds(50));
    }
  }

  // One-shot `kvctl ctrl` processes: two groups per join (one command), the
  // previous two per leave (one command); gids 100000(k+1), ...
  void RunKvctl(int k) {
    uint64_t next = 100000 * static_cast<uint64_t>(k + 1);
    std::vector<uint64_t> previous;
    for (int n = 0; !stop_; ++n) {
      const uint64_t g1 = next++;
      const uint64_t g2 = next++;
      Op join{.client = absl::StrCat("kvctl ", k), .join = true};
      std::vector<std::string> args = {"ctrl", "join"};
      for (uint64_t gid : {g1, g2}) {
        join.groups[gid] = ServersOf(gid);
        join.gids.insert(gid);
        args.push_back(absl::StrCat(gid, "=", absl::StrJoin(ServersOf(gid), ",")));
      }
      Kvctl(k, args, join);
      Record(join);
      if (!previous.empty()) {
        Op leave{.client = join.client, .join = false, .gids = {previous.begin(), previous.end()}};
        args = {"ctrl", "leave"};
        for (uint64_t gid : previous) args.push_back(absl::StrCat(gid));
        Kvctl(k, args, leave);
        Record(leave);
      }
      previous = {g1, g2};
    }
  }

  // Runs kvctl with `args`; exit 0 is an acknowledgement ("OK (configuration
  // N)"), 1 an unknown outcome, 2 a refusal (INVALID_ARGUMENT).
  void Kvctl(int k, const std::vector<std::string>& args, Op& op) {
    const std::string out = absl::StrCat(cluster_->dir(), "/kvctl-", k, "-", runs_++, ".out");
    std::vector<std::string> argv = {common::BinaryPath("kvctl"),
                                     "--controllers=" + cluster_->endpoints_flag(), "--timeout=5s"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto p = common::Subprocess::Start({.argv = argv, .log_path = out});
    if (!p.ok()) {
      ADD_FAILURE() << "starting kvctl: " << p.status();
      op.error = "not started";
      return;
    }
    const std::optional<int> code = (*p)->WaitFor(absl::Seconds(60));
    const std::string output = ReadLog(out);
    std::filesystem::remove(out);
    op.error = absl::StrCat("kvctl exit ", code.value_or(-1), ": ", output);
    if (!code.has_value()) {
      ADD_FAILURE() << "kvctl " << absl::StrJoin(args, " ") << " did not exit within 60 s";
      return;
    }
    constexpr char kOk[] = "OK (configuration ";
    if (*code == 0 && absl::StartsWith(output, kOk) &&
        absl::SimpleAtoi(output.substr(sizeof(kOk) - 1, output.find(')') - (sizeof(kOk) - 1)),
                         &op.num)) {
      op.outcome = Op::kAcked;
      op.error.clear();
    } else if (*code == 2) {
      op.outcome = Op::kRefused;
    } else {
      EXPECT_EQ(*code, 1) << op.error;  // not a crash, not an unparsable success
      op.outcome = Op::kUnknown;
    }
  }

  ProcessCluster* const cluster_;
  std::atomic<bool> stop_{false};
  std::atomic<int> runs_{0};
  absl::Mutex mu_;
  std::vector<Op> ops_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

// `history` (configurations 0..latest) accounts for `ops`: each configuration
// after 0 adds exactly the groups of one issued Join or removes exactly the
// gids of one issued Leave, each operation at most once, an acknowledged one
// exactly at the number it reported, a refused one never; every change is
// balanced with minimal moves (TransitionProblem); the final groups are those
// the operations imply. Returns how many operations were acknowledged.
int CheckOpsAgainstHistory(const std::vector<pb::Config>& history, const std::vector<Op>& ops) {
  std::map<uint64_t, size_t> join_of;   // gid -> index in ops
  std::map<uint64_t, size_t> leave_of;  // gid -> index in ops
  for (size_t i = 0; i < ops.size(); ++i) {
    for (uint64_t gid : ops[i].gids) (ops[i].join ? join_of : leave_of)[gid] = i;
  }
  std::vector<uint64_t> applied_at(ops.size(), 0);
  EXPECT_FALSE(history.empty());
  if (history.empty()) return 0;
  EXPECT_EQ(lab4a::CheckGroups(history[0], {}), "");
  for (size_t k = 1; k < history.size(); ++k) {
    const pb::Config& before = history[k - 1];
    const pb::Config& after = history[k];
    EXPECT_EQ(after.num(), k);
    std::set<uint64_t> added;
    std::set<uint64_t> removed;
    const std::set<uint64_t> b = GroupIds(before);
    const std::set<uint64_t> a = GroupIds(after);
    for (uint64_t g : a) {
      if (!b.contains(g)) added.insert(g);
    }
    for (uint64_t g : b) {
      if (!a.contains(g)) removed.insert(g);
    }
    if (added.empty() == removed.empty()) {
      ADD_FAILURE() << "configuration " << k << " neither only adds nor only removes groups:\n  "
                    << before.ShortDebugString() << "\n  " << after.ShortDebugString();
      continue;
    }
    const bool join = !added.empty();
    const std::set<uint64_t>& changed = join ? added : removed;
    const std::map<uint64_t, size_t>& index = join ? join_of : leave_of;
    auto it = index.find(*changed.begin());
    if (it == index.end()) {
      ADD_FAILURE() << "configuration " << k << (join ? " adds" : " removes") << " group "
                    << *changed.begin() << ", which no client " << (join ? "joined" : "left");
      continue;
    }
    const Op& op = ops[it->second];
    EXPECT_EQ(op.gids, changed) << "configuration " << k << " is not exactly " << op.Describe();
    EXPECT_EQ(applied_at[it->second], 0u) << op.Describe() << " took effect twice: configurations "
                                          << applied_at[it->second] << " and " << k;
    applied_at[it->second] = k;
    EXPECT_EQ(TransitionProblem(before, after, join ? changed : std::set<uint64_t>(),
                                join ? std::set<uint64_t>() : changed, op.groups),
              "");
  }
  int acked = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    switch (op.outcome) {
      case Op::kAcked:
        ++acked;
        EXPECT_EQ(applied_at[i], op.num)
            << op.Describe() << " is in configuration " << applied_at[i] << " (0: lost)";
        break;
      case Op::kRefused:
        // Fresh gids are never refused; a Leave is, after a Join of unknown
        // outcome that had not taken effect.
        EXPECT_FALSE(op.join) << op.Describe();
        EXPECT_EQ(applied_at[i], 0u)
            << op.Describe() << " took effect in configuration " << applied_at[i];
        break;
      case Op::kUnknown:
        break;  // at most once: checked above
    }
  }
  // The final groups, as the acknowledged operations imply them.
  const std::set<uint64_t> final_groups = GroupIds(history.back());
  for (const auto& [gid, j] : join_of) {
    auto l = leave_of.find(gid);
    const bool left_acked = l != leave_of.end() && ops[l->second].outcome == Op::kAcked;
    const bool left_maybe = l != leave_of.end() && ops[l->second].outcome == Op::kUnknown;
    if (left_acked) {
      EXPECT_FALSE(final_groups.contains(gid)) << "group " << gid << " left (acknowledged)";
    } else if (ops[j].outcome == Op::kAcked && !left_maybe) {
      EXPECT_TRUE(final_groups.contains(gid))
          << "group " << gid << " joined (acknowledged) and never left";
    }
  }
  for (uint64_t gid : final_groups) {
    EXPECT_TRUE(join_of.contains(gid)) << "group " << gid << " was never joined";
  }
  return acked;
}

// The checker itself, on histories made by the pure state machine: it must
// notice a lost, doubled, misplaced or unrequested change.
class CheckOpsTest : public ::testing::Test {
 protected:
  // Join or Leave on the state machine, recorded as an acknowledged Op.
  void Do(bool join, std::set<uint64_t> gids) {
    pb::CtrlCommand cmd;
    cmd.set_shard_count(10);
    Op op{.client = "test", .join = join, .gids = gids, .outcome = Op::kAcked};
    for (uint64_t gid : gids) {
      if (join) {
        pb::Group* g = cmd.mutable_join()->add_groups();
        g->set_gid(gid);
        g->add_servers(absl::StrCat("s", gid, ":1"));
        op.groups[gid] = {absl::StrCat("s", gid, ":1")};
      } else {
        cmd.mutable_leave()->add_gids(gid);
      }
    }
    absl::StatusOr<pb::CtrlResult> r = sm_.Execute(cmd);
    ASSERT_TRUE(r.ok()) << r.status();
    op.num = r->num();
    ops_.push_back(op);
  }
  std::vector<pb::Config> History() const {
    std::vector<pb::Config> h;
    for (int64_t n = 0; n <= static_cast<int64_t>(sm_.latest_num()); ++n) h.push_back(sm_.Query(n));
    return h;
  }

  CtrlStateMachine sm_;
  std::vector<Op> ops_;
};

TEST_F(CheckOpsTest, AcceptsAFaithfulHistory) {
  Do(true, {1});
  Do(true, {2, 3});
  Do(false, {1});
  EXPECT_EQ(CheckOpsAgainstHistory(History(), ops_), 3);
}

// Whether `check` reports a failure that mentions `what` (its failures are
// captured, not counted against this test).
bool Reports(const std::function<void()>& check, const std::string& what) {
  ::testing::TestPartResultArray results;
  {
    ::testing::ScopedFakeTestPartResultReporter capture(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
    check();
  }
  for (int i = 0; i < results.size(); ++i) {
    if (absl::StrContains(results.GetTestPartResult(i).message(), what)) return true;
  }
  return false;
}

TEST_F(CheckOpsTest, NoticesLostDoubledMisplacedAndUnrequestedChanges) {
  Do(true, {1});
  Do(true, {2, 3});
  Do(false, {1});
  const std::vector<pb::Config> h = History();
  std::vector<Op> lost = ops_;
  lost.push_back({.client = "test", .join = true, .gids = {9}, .outcome = Op::kAcked, .num = 4});
  EXPECT_TRUE(Reports([&] { CheckOpsAgainstHistory(h, lost); }, "(0: lost)"));
  std::vector<Op> misplaced = ops_;
  misplaced[1].num = 3;
  EXPECT_TRUE(Reports([&] { CheckOpsAgainstHistory(h, misplaced); }, "is in configuration 2"));
  std::vector<Op> unrequested = ops_;
  unrequested.erase(unrequested.begin());
  EXPECT_TRUE(Reports([&] { CheckOpsAgainstHistory(h, unrequested); }, "which no client joined"));
  std::vector<Op> refused = ops_;
  refused[2].outcome = Op::kRefused;
  EXPECT_TRUE(
      Reports([&] { CheckOpsAgainstHistory(h, refused); }, "took effect in configuration 3"));
  // Groups 2 and 3 leave, then their join is applied again.
  Do(false, {2, 3});
  std::vector<pb::Config> doubled = History();
  pb::Config again = doubled[3];  // groups 2 and 3
  again.set_num(5);
  doubled.push_back(again);
  EXPECT_TRUE(Reports([&] { CheckOpsAgainstHistory(doubled, ops_); }, "took effect twice"));
  // An unbalanced configuration after a join.
  std::vector<pb::Config> unbalanced = History();
  unbalanced[2].set_shards(0, 3);
  unbalanced[2].set_shards(1, 3);
  EXPECT_TRUE(Reports([&] { CheckOpsAgainstHistory(unbalanced, ops_); }, "too much larger"));
}

// ---------------------------------------------------------------------------
// Every replica's history
// ---------------------------------------------------------------------------

// Waits until all replicas run, agree on the commit index and have applied
// it; false after `limit`.
bool WaitCaughtUp(ProcessCluster& cluster, absl::Duration limit) {
  const absl::Time deadline = absl::Now() + limit;
  while (absl::Now() < deadline) {
    bool same = true;
    std::optional<uint64_t> commit;
    for (int i = 0; i < cluster.size() && same; ++i) {
      auto st = cluster.Status(i);
      same = st.ok() && st->applied_index() == st->commit_index() &&
             (!commit.has_value() || *commit == st->commit_index());
      if (st.ok()) commit = st->commit_index();
    }
    if (same) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return false;
}

// The history as replica `i`'s state machine holds it.
//
// Query and Latest are ReadIndex reads that only a leader answers, from its
// own state machine, so "replica i's history" is what the cluster serves
// while i leads. The replicas expose no leadership transfer, and pausing the
// leader lets either of the other two win (with PreVote and CheckQuorum
// stickiness, a paused majority cannot force it either). So: once every
// replica has applied the same commit index (WaitCaughtUp), all three are
// killed and restarted from their own data directories, i as usual and the
// other two with kNeverCampaign; i is the only candidate and its log is as
// long as theirs, so it wins. Its state machine is then rebuilt from its own
// snapshot and log, which also checks that what it holds survives a crash.
// The reads count only if i led, in the same term, before and after them.
absl::StatusOr<std::vector<pb::Config>> HistoryOfReplica(ProcessCluster& cluster, int i) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    for (int j = 0; j < cluster.size(); ++j) cluster.Kill(j);
    for (int j = 0; j < cluster.size(); ++j) {
      if (j == i) {
        cluster.Start(j);
      } else {
        cluster.Start(j, kNeverCampaign);
      }
    }
    if (absl::Status st = cluster.WaitAllHealthy(); !st.ok()) return st;
    const int leader = cluster.WaitForLeader(absl::Seconds(30));
    if (leader != i) {
      return absl::InternalError(
          absl::StrCat("replica ", i + 1, " did not become the leader (", leader + 1, " did)"));
    }
    auto before = cluster.Status(i);
    std::unique_ptr<client::CtrlClerk> clerk = NewClerk(cluster, absl::Seconds(20));
    absl::StatusOr<std::vector<pb::Config>> history = ReadHistory(*clerk);
    auto after = cluster.Status(i);
    if (history.ok() && before.ok() && after.ok() && after->role() == rsm::pb::ROLE_LEADER &&
        after->term() == before->term()) {
      return history;
    }
  }
  return absl::InternalError(absl::StrCat("replica ", i + 1, " did not stay the leader"));
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

TEST(ShardCtrlerProcess, ConcurrentJoinLeaveWhileTheLeaderIsKilled) {
  ProcessCluster cluster(kServer, 3, kFlags);
  ASSERT_TRUE(cluster.WaitAllHealthy().ok()) << Logs(cluster);
  ASSERT_GE(cluster.WaitForLeader(), 0) << Logs(cluster);

  Workload workload(&cluster, /*clerks=*/3, /*kvctls=*/2);
  int kills = 0;
  for (int round = 0; round < 3; ++round) {
    absl::SleepFor(absl::Milliseconds(1500));
    const int leader = cluster.Leader();
    if (leader < 0) continue;
    cluster.Kill(leader);
    ++kills;
    absl::SleepFor(absl::Milliseconds(1000));
    cluster.Start(leader);
    EXPECT_TRUE(cluster.WaitHealthy(leader).ok()) << Logs(cluster);
  }
  absl::SleepFor(absl::Milliseconds(1500));
  workload.Stop();
  EXPECT_GE(kills, 2) << "the leader was seldom found";

  const std::vector<Op> ops = workload.ops();
  int kvctl_acked = 0;
  for (const Op& op : ops) {
    if (op.outcome == Op::kAcked && absl::StartsWith(op.client, "kvctl")) ++kvctl_acked;
  }
  ASSERT_TRUE(WaitCaughtUp(cluster, absl::Seconds(30))) << "replicas never caught up\n"
                                                        << Logs(cluster);
  std::unique_ptr<client::CtrlClerk> clerk = NewClerk(cluster, absl::Seconds(20));
  absl::StatusOr<std::vector<pb::Config>> history = ReadHistory(*clerk);
  ASSERT_TRUE(history.ok()) << history.status();
  clerk.reset();
  const int acked = CheckOpsAgainstHistory(*history, ops);
  std::printf(
      "%zu operations (%d acknowledged, %d of them by kvctl), %zu configurations, %d "
      "leader kills\n",
      ops.size(), acked, kvctl_acked, history->size(), kills);
  EXPECT_GE(acked, 20) << "the cluster made too little progress\n" << Logs(cluster);
  EXPECT_GE(kvctl_acked, 1);
  for (const Op& op : ops) {
    if (op.outcome != Op::kAcked) std::printf("  %s\n", op.Describe().c_str());
  }

  for (int i = 0; i < cluster.size(); ++i) {
    absl::StatusOr<std::vector<pb::Config>> mine = HistoryOfReplica(cluster, i);
    ASSERT_TRUE(mine.ok()) << mine.status() << "\n" << Logs(cluster);
    ASSERT_EQ(mine->size(), history->size()) << "replica " << i + 1;
    for (size_t k = 0; k < mine->size(); ++k) {
      ASSERT_EQ(ConfigDifference((*history)[k], (*mine)[k]), "") << "replica " << i + 1;
    }
  }
}

TEST(ShardCtrlerProcess, RestartWithAnotherShardCountIsRefused) {
  ProcessCluster cluster(kServer, 3, kFlags);
  ASSERT_TRUE(cluster.WaitAllHealthy().ok()) << Logs(cluster);
  std::unique_ptr<client::CtrlClerk> clerk = NewClerk(cluster, absl::Seconds(20));
  ASSERT_TRUE(clerk->Join({{1, {"a:1"}}, {2, {"b:1"}}}).ok());

  cluster.Kill(2);
  cluster.Start(2, {"--shards=12"});
  const std::optional<int> code = cluster.process(2)->WaitFor(absl::Seconds(30));
  ASSERT_TRUE(code.has_value()) << "started with --shards=12 over a 10-shard directory";
  EXPECT_EQ(*code, 2);
  const std::string log = ReadLog(cluster.log_path(2));
  EXPECT_NE(log.find("shards 10"), std::string::npos) << log;
  EXPECT_NE(log.find("shards 12"), std::string::npos) << log;
  EXPECT_NE(log.find("refusing to start"), std::string::npos) << log;

  // Nothing was touched: with the right count it starts and catches up.
  cluster.Start(2);
  ASSERT_TRUE(cluster.WaitHealthy(2).ok()) << Logs(cluster);
  absl::StatusOr<uint64_t> num = clerk->Join({{3, {"c:1"}}});
  ASSERT_TRUE(num.ok()) << num.status();
  ASSERT_TRUE(WaitCaughtUp(cluster, absl::Seconds(30))) << Logs(cluster);
  absl::StatusOr<std::vector<pb::Config>> mine = HistoryOfReplica(cluster, 2);
  ASSERT_TRUE(mine.ok()) << mine.status() << "\n" << Logs(cluster);
  ASSERT_EQ(mine->size(), *num + 1);
  EXPECT_EQ(lab4a::CheckGroups(mine->back(), {1, 2, 3}), "");
  EXPECT_EQ(Malformed(mine->back(), 10), "");
}

}  // namespace
}  // namespace ds::ctrl
