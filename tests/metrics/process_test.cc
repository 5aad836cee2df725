// --metrics-listen on the real daemons: each one started with
// --metrics-listen=127.0.0.1:0 logs the port it bound, serves the Prometheus
// text format at /metrics, and its metrics make sense and move with load: a
// 3-replica kvraft-server group, a shard controller with one shardkv group,
// and an mr-coordinator with an mr-worker running a small job.
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/clerk.h"
#include "client/ctrl_client.h"
#include "client/shardkv_client.h"
#include "gtest/gtest.h"
#include "tests/common/process_cluster.h"
#include "tests/mapreduce/mr_cluster.h"
#include "tests/metrics/scrape.h"

namespace ds::testing {
namespace {

constexpr char kMetricsFlag[] = "--metrics-listen=127.0.0.1:0";

// FastRaftFlags with the info log, where the metrics address is reported.
std::vector<std::string> ReplicaFlags() {
  std::vector<std::string> flags = FastRaftFlags();
  flags.push_back("--log-level=info");
  flags.push_back(kMetricsFlag);
  return flags;
}

// The metrics addresses of every replica of `cluster`, from their logs.
std::vector<std::string> MetricsAddresses(const ProcessCluster& cluster) {
  std::vector<std::string> out;
  for (int i = 0; i < cluster.size(); ++i) {
    absl::StatusOr<std::string> a = MetricsAddressFromLog(cluster.log_path(i));
    EXPECT_TRUE(a.ok()) << a.status() << "\n" << cluster.LogTail(i);
    out.push_back(a.value_or(""));
  }
  return out;
}

MetricsText MustScrape(const std::string& address) {
  absl::StatusOr<MetricsText> m = Scrape(address);
  EXPECT_TRUE(m.ok()) << address << ": " << m.status();
  return m.ok() ? *std::move(m) : MetricsText();
}

// The families every replica serves, with their types.
void ExpectReplicaFamilies(const MetricsText& m, const std::string& who) {
  const std::vector<std::pair<std::string, std::string>> families = {
      {"dstack_replica_info", "gauge"},
      {"dstack_raft_term", "gauge"},
      {"dstack_raft_role", "gauge"},
      {"dstack_raft_leader_id", "gauge"},
      {"dstack_raft_commit_index", "gauge"},
      {"dstack_raft_applied_index", "gauge"},
      {"dstack_raft_last_log_index", "gauge"},
      {"dstack_raft_snapshot_index", "gauge"},
      {"dstack_raft_log_bytes", "gauge"},
      {"dstack_raft_snapshot_bytes", "gauge"},
      {"dstack_raft_storage_saves_total", "counter"},
      {"dstack_raft_storage_syncs_total", "counter"},
      {"dstack_raft_proposals_total", "counter"},
      {"dstack_raft_applied_entries_total", "counter"},
      {"dstack_raft_snapshots_total", "counter"},
      {"dstack_raft_snapshot_written_bytes_total", "counter"},
      {"dstack_raft_storage_sync_duration_seconds", "histogram"},
      {"dstack_raft_apply_duration_seconds", "histogram"},
      {"dstack_sessions", "gauge"},
  };
  for (const auto& [name, type] : families) {
    EXPECT_EQ(m.Type(name), type) << who << ": " << name;
    EXPECT_TRUE(m.HasHelp(name)) << who << ": " << name;
  }
  EXPECT_TRUE(m.Has("dstack_raft_storage_sync_duration_seconds_count")) << who;
  EXPECT_EQ(m.Find("dstack_raft_role").size(), 4u) << who << ": one sample per role";
  EXPECT_EQ(m.Sum("dstack_raft_role"), 1) << who << ": exactly one role at a time";
  EXPECT_LE(m.Sum("dstack_raft_applied_index"), m.Sum("dstack_raft_commit_index")) << who;
  EXPECT_LE(m.Sum("dstack_raft_commit_index"), m.Sum("dstack_raft_last_log_index")) << who;
  EXPECT_GE(m.Sum("dstack_raft_term"), 1) << who;
}

// Scrapes every replica until exactly one says it is the leader and all agree
// on the term (an election may be under way at first); that replica's index.
int LeaderByMetrics(const std::vector<std::string>& addresses, std::vector<MetricsText>* scrapes) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    scrapes->clear();
    int leaders = 0;
    int leader = -1;
    std::set<double> terms;
    for (size_t i = 0; i < addresses.size(); ++i) {
      scrapes->push_back(MustScrape(addresses[i]));
      if (scrapes->back().Sum("dstack_raft_role", {{"role", "leader"}}) == 1) {
        ++leaders;
        leader = static_cast<int>(i);
      }
      terms.insert(scrapes->back().Sum("dstack_raft_term"));
    }
    if (leaders == 1 && terms.size() == 1) return leader;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return -1;
}

TEST(MetricsProcess, KvraftReplicasServeRaftAndRequestMetrics) {
  std::vector<std::string> flags = ReplicaFlags();
  // Small enough that the writes below make every replica snapshot.
  flags.push_back("--snapshot-threshold-bytes=8192");
  ProcessCluster cluster("kvraft-server", 3, flags);
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  const std::vector<std::string> addresses = MetricsAddresses(cluster);
  ASSERT_FALSE(::testing::Test::HasFailure());

  std::vector<MetricsText> before;
  const int leader = LeaderByMetrics(addresses, &before);
  ASSERT_GE(leader, 0) << "no single leader in the metrics";
  EXPECT_EQ(leader, cluster.Leader()) << "the metrics and Replica.Status disagree on the leader";
  for (size_t i = 0; i < before.size(); ++i) {
    const std::string who = absl::StrCat("replica ", i + 1);
    ExpectReplicaFamilies(before[i], who);
    EXPECT_EQ(
        before[i].Sum("dstack_replica_info", {{"service", "kvraft"}, {"id", absl::StrCat(i + 1)}}),
        1)
        << who;
    EXPECT_EQ(before[i].Sum("dstack_raft_leader_id"), leader + 1) << who;
  }

  constexpr int kWrites = 60;
  constexpr int kReads = 10;
  auto clerk = client::Clerk::Create({.endpoints = cluster.endpoints(),
                                      .operation_timeout = absl::Seconds(10),
                                      .attempt_timeout = absl::Milliseconds(500)});
  ASSERT_TRUE(clerk.ok()) << clerk.status();
  const std::string value(256, 'v');
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_TRUE((*clerk)->Put(absl::StrCat("key", i), value).ok());
  }
  for (int i = 0; i < kReads; ++i) ASSERT_TRUE((*clerk)->Get(absl::StrCat("key", i)).ok());

  const MetricsText& b = before[leader];
  const MetricsText a = MustScrape(addresses[leader]);
  ASSERT_EQ(a.Sum("dstack_raft_role", {{"role", "leader"}}), 1) << "leadership moved";
  EXPECT_GE(a.Sum("dstack_raft_proposals_total") - b.Sum("dstack_raft_proposals_total"), kWrites);
  const std::map<std::string, std::string> put = {{"service", "kvraft"}, {"op", "put"}};
  const std::map<std::string, std::string> get = {{"service", "kvraft"}, {"op", "get"}};
  EXPECT_GE(a.Sum("dstack_request_duration_seconds_count", put) -
                b.Sum("dstack_request_duration_seconds_count", put),
            kWrites);
  EXPECT_GE(a.Sum("dstack_request_duration_seconds_count", get) -
                b.Sum("dstack_request_duration_seconds_count", get),
            kReads);
  EXPECT_EQ(a.Sum("dstack_request_duration_seconds_bucket", {{"op", "put"}, {"le", "+Inf"}}),
            a.Sum("dstack_request_duration_seconds_count", put));
  EXPECT_GT(a.Sum("dstack_request_duration_seconds_sum", put), 0);
  EXPECT_GE(a.Sum("dstack_raft_commit_index") - b.Sum("dstack_raft_commit_index"), kWrites);
  EXPECT_GT(a.Sum("dstack_raft_storage_sync_duration_seconds_count"),
            b.Sum("dstack_raft_storage_sync_duration_seconds_count"));
  EXPECT_GE(a.Sum("dstack_raft_applied_entries_total") - b.Sum("dstack_raft_applied_entries_total"),
            kWrites);
  EXPECT_GE(a.Sum("dstack_sessions"), 1);
  EXPECT_GE(a.Sum("dstack_raft_snapshots_total", {{"origin", "local"}}), 1);
  EXPECT_GT(a.Sum("dstack_raft_snapshot_bytes"), 0);
  EXPECT_GT(a.Sum("dstack_raft_snapshot_written_bytes_total"), 0);
  EXPECT_GT(a.Sum("dstack_raft_snapshot_index"), 0);

  // Followers apply what the leader committed; none of them proposed.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  for (int i = 0; i < cluster.size(); ++i) {
    if (i == leader) continue;
    MetricsText f = MustScrape(addresses[i]);
    while (f.Sum("dstack_raft_applied_index") < a.Sum("dstack_raft_commit_index") &&
           absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(50));
      f = MustScrape(addresses[i]);
    }
    EXPECT_GE(f.Sum("dstack_raft_applied_index"), a.Sum("dstack_raft_commit_index"))
        << "replica " << i + 1;
    EXPECT_EQ(f.Sum("dstack_raft_proposals_total"), before[i].Sum("dstack_raft_proposals_total"));
    EXPECT_EQ(f.Sum("dstack_raft_role", {{"role", "follower"}}), 1);
  }
}

TEST(MetricsProcess, ControllerAndShardKvGroupServeShardStates) {
  ShardedProcessCluster::Options options = ShardedProcessCluster::Options::Fast({1});
  for (auto* flags : {&options.controller_flags, &options.group_flags}) {
    flags->push_back("--log-level=info");
    flags->push_back(kMetricsFlag);
  }
  ShardedProcessCluster cluster(std::move(options));
  ASSERT_TRUE(cluster.WaitAllHealthy().ok()) << cluster.Logs();
  const std::vector<std::string> ctrl = MetricsAddresses(cluster.controllers());
  const std::vector<std::string> group = MetricsAddresses(cluster.group(1));
  ASSERT_FALSE(::testing::Test::HasFailure());

  auto ctrl_clerk = client::CtrlClerk::Create({.endpoints = cluster.controllers().endpoints(),
                                               .operation_timeout = absl::Seconds(20),
                                               .attempt_timeout = absl::Milliseconds(500)});
  ASSERT_TRUE(ctrl_clerk.ok()) << ctrl_clerk.status();
  ASSERT_TRUE((*ctrl_clerk)->Join({{1, cluster.group(1).endpoints()}}).ok()) << cluster.Logs();

  std::vector<MetricsText> ctrl_scrapes;
  const int ctrl_leader = LeaderByMetrics(ctrl, &ctrl_scrapes);
  ASSERT_GE(ctrl_leader, 0);
  ExpectReplicaFamilies(ctrl_scrapes[ctrl_leader], "controller");
  EXPECT_EQ(ctrl_scrapes[ctrl_leader].Sum("dstack_replica_info", {{"service", "shardctrler"}}), 1);
  EXPECT_GE(ctrl_scrapes[ctrl_leader].Sum("dstack_request_duration_seconds_count",
                                          {{"service", "shardctrler"}, {"op", "join"}}),
            1);
  EXPECT_FALSE(ctrl_scrapes[ctrl_leader].Has("dstack_shardkv_shards"));

  // Every replica of the group applies the configuration: all 10 shards
  // serving here.
  for (size_t i = 0; i < group.size(); ++i) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    MetricsText m = MustScrape(group[i]);
    while (m.Sum("dstack_shardkv_shards", {{"state", "serving"}}) != 10 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(100));
      m = MustScrape(group[i]);
    }
    const std::string who = absl::StrCat("group 1 replica ", i + 1);
    ExpectReplicaFamilies(m, who);
    EXPECT_EQ(m.Type("dstack_shardkv_shards"), "gauge");
    EXPECT_EQ(m.Find("dstack_shardkv_shards").size(), 5u) << who << ": one sample per state";
    EXPECT_EQ(m.Sum("dstack_shardkv_shards", {{"state", "serving"}}), 10) << who;
    EXPECT_EQ(m.Sum("dstack_shardkv_shards"), 10) << who;
    EXPECT_GE(m.Sum("dstack_shardkv_config_num"), 1) << who;
  }

  std::vector<MetricsText> before;
  const int leader = LeaderByMetrics(group, &before);
  ASSERT_GE(leader, 0);
  constexpr int kWrites = 20;
  auto clerk = client::ShardKvClerk::Create({.endpoints = cluster.controllers().endpoints(),
                                             .operation_timeout = absl::Seconds(10),
                                             .attempt_timeout = absl::Milliseconds(500)});
  ASSERT_TRUE(clerk.ok()) << clerk.status();
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_TRUE((*clerk)->Put(absl::StrCat("key", i), "value").ok());
  }
  const MetricsText a = MustScrape(group[leader]);
  const std::map<std::string, std::string> put = {{"service", "shardkv"}, {"op", "put"}};
  EXPECT_GE(a.Sum("dstack_request_duration_seconds_count", put) -
                before[leader].Sum("dstack_request_duration_seconds_count", put),
            kWrites);
  EXPECT_GE(
      a.Sum("dstack_raft_proposals_total") - before[leader].Sum("dstack_raft_proposals_total"),
      kWrites);
  EXPECT_EQ(a.Sum("dstack_shardkv_keys"), kWrites);
}

TEST(MetricsProcess, CoordinatorAndWorkerServeJobAndTaskMetrics) {
  mr::testing::MrCluster cluster(
      {.coordinator_flags = {kMetricsFlag}, .worker_flags = {kMetricsFlag}});
  cluster.StartWorker();
  auto coordinator = MetricsAddressFromLog(cluster.Path("coordinator.log"));
  auto worker = MetricsAddressFromLog(cluster.Path("worker-0.log"));
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  ASSERT_TRUE(worker.ok()) << worker.status();

  MetricsText m = MustScrape(*coordinator);
  EXPECT_EQ(m.Type("dstack_mr_jobs"), "gauge");
  EXPECT_EQ(m.Sum("dstack_mr_jobs"), 0);
  EXPECT_EQ(m.Find("dstack_mr_jobs").size(), 6u) << "one sample per job state";

  // Two small inputs: two map tasks, three reduce tasks.
  const std::string in1 = cluster.Path("in1.txt");
  const std::string in2 = cluster.Path("in2.txt");
  std::ofstream(in1) << "a b c a\n";
  std::ofstream(in2) << "b c d\n";
  const std::string out = cluster.Path("out");
  mr::testing::RunResult run =
      cluster.Mrrun({"--app=wc", "--output=" + out, "--reduces=3", "--input", in1, in2});
  ASSERT_EQ(run.exit_code, 0) << run.output;

  m = MustScrape(*coordinator);
  EXPECT_EQ(m.Sum("dstack_mr_jobs", {{"state", "succeeded"}}), 1);
  EXPECT_EQ(m.Sum("dstack_mr_jobs"), 1);
  EXPECT_EQ(m.Type("dstack_mr_tasks"), "gauge");
  EXPECT_EQ(m.Find("dstack_mr_tasks").size(), 6u) << "map and reduce x idle, running, done";
  EXPECT_EQ(m.Sum("dstack_mr_tasks"), 0) << "tasks of ended jobs are not counted";
  EXPECT_EQ(m.Sum("dstack_mr_running_attempts"), 0);
  EXPECT_GE(m.Sum("dstack_mr_task_attempts_total", {{"kind", "all"}}), 5);
  EXPECT_EQ(m.Type("dstack_mr_task_attempts_total"), "counter");

  // The only worker ran every task (the report precedes the job's end; the
  // counters precede the report).
  const MetricsText w = MustScrape(*worker);
  EXPECT_EQ(w.Type("dstack_mr_worker_tasks_total"), "counter");
  EXPECT_EQ(w.Type("dstack_mr_worker_task_duration_seconds"), "histogram");
  EXPECT_EQ(w.Sum("dstack_mr_worker_tasks_total", {{"type", "map"}, {"outcome", "succeeded"}}), 2);
  EXPECT_EQ(w.Sum("dstack_mr_worker_tasks_total", {{"type", "reduce"}, {"outcome", "succeeded"}}),
            3);
  EXPECT_EQ(w.Sum("dstack_mr_worker_tasks_total", {{"outcome", "failed"}}), 0);
  EXPECT_EQ(w.Sum("dstack_mr_worker_task_duration_seconds_count", {{"type", "reduce"}}), 3);
  EXPECT_EQ(w.Sum("dstack_mr_worker_running_tasks"), 0);
}

}  // namespace
}  // namespace ds::testing
