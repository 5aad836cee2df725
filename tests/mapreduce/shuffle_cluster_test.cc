// Workers that share nothing but inputs and outputs: map output served by the
// worker that made it and fetched over gRPC, maps re-run when their worker
// dies before the reducers fetched its output, and the combiner (plugin and
// streaming) leaving the output unchanged.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/mapreduce/mr_cluster.h"

namespace ds::mr::testing {
namespace {

using ::testing::HasSubstr;

std::vector<std::string> WithTexts(std::vector<std::string> args) {
  args.push_back("--input");
  for (const std::string& t : Texts()) args.push_back(t);
  return args;
}

int64_t Counter(const pb::JobStatus& st, const std::string& name) {
  auto it = st.counters().find(name);
  return it == st.counters().end() ? 0 : it->second;
}

// As root, each worker's work dir is a tmpfs in its own mount namespace: the
// test (and every other worker) sees only the empty directory beneath, so the
// reducers can only have got the other worker's map output over gRPC.
TEST(MapReduceShareNothing, WorkersInPrivateMountNamespacesMatchSequential) {
  MrCluster cluster;
  const char* env = std::getenv("MR_TEST_ISOLATION");
  bool disabled = env != nullptr && std::string(env) == "0";
  if (geteuid() == 0 && access("/usr/bin/unshare", X_OK) == 0 && !disabled) {
    ASSERT_TRUE(cluster.isolated()) << "root with unshare(1), yet no private work dirs";
  }
  cluster.StartWorker();
  cluster.StartWorker();
  ASSERT_TRUE(cluster.WaitForWorkers(2));
  std::string out = cluster.Path("out");
  RunResult run = cluster.Mrrun(WithTexts({"--app=wc", "--output=" + out, "--reduces=10"}));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(SortedOutput(out) == cluster.Expected({"--app=wc"}, Texts()));
  pb::JobStatus st = cluster.Status("job-1").value();
  // Both workers ran maps (mtiming-style parallelism is the timing test's
  // business; here it is enough that each reduce read every map).
  EXPECT_EQ(Counter(st, "reduce.bytes_in"), Counter(st, "map.bytes_out"));
  if (cluster.isolated()) {
    for (int i = 0; i < 2; ++i) {
      EXPECT_TRUE(std::filesystem::is_empty(cluster.WorkDir(i)))
          << "worker " << i << "'s files are visible outside its namespace";
    }
  }
  RunResult listed = cluster.Mrrun({"workers"});
  EXPECT_EQ(listed.exit_code, 0);
  EXPECT_THAT(listed.output, HasSubstr("ADDRESS"));
  EXPECT_THAT(listed.output, HasSubstr("indexer"));
  // Every worker registered with its map-output address and its apps.
  auto workers = cluster.RegisteredWorkers();
  ASSERT_TRUE(workers.ok());
  ASSERT_EQ(workers->size(), 2u);
  for (const pb::WorkerInfo& w : *workers) {
    EXPECT_THAT(w.address(), HasSubstr("127.0.0.1:"));
    EXPECT_THAT(std::vector<std::string>(w.apps().begin(), w.apps().end()),
                ::testing::Contains("wc"));
  }
}

// The paper's rule: a worker killed (-9) after its maps finished and before
// the reducers fetched them takes their output with it; the reducers' failed
// fetches make the coordinator run those maps again, and the output is
// mr-sequential's. Worker 0 runs every map, then dawdles in its reduce (slow_wc
// sleeps per single-letter key) so the kill lands before any reduce is done.
TEST(MapReduceLostOutput, KilledWorkersFinishedMapsAreRunAgain) {
  MrCluster cluster({.coordinator_flags = {"--task-timeout=2s"}});
  cluster.StartWorker({}, {"SLOW_WC_MS=2000"});
  std::string out = cluster.Path("out");
  std::vector<std::string> inputs = {Texts()[0], Texts()[1], Texts()[2], Texts()[3]};
  RunResult submit =
      cluster.Mrrun({"--app=" + LibPath("mr-test-slow_wc"), "--output=" + out, "--reduces=4",
                     "--detach", "--input", inputs[0], inputs[1], inputs[2], inputs[3]});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  ASSERT_TRUE(cluster.WaitForJob(
      "job-1", [](const pb::JobStatus& s) { return s.state() == pb::REDUCING; },
      absl::Seconds(60)));
  cluster.worker(0).Kill();
  pb::JobStatus before = cluster.Status("job-1").value();
  ASSERT_EQ(before.maps_done(), 4);
  ASSERT_EQ(before.reduces_done(), 0) << "too late: a reduce finished before the kill";

  cluster.StartWorker();
  ASSERT_TRUE(cluster.WaitForJob(
      "job-1", [](const pb::JobStatus& s) { return s.state() == pb::SUCCEEDED; },
      absl::Seconds(90)));
  pb::JobStatus st = cluster.Status("job-1").value();
  EXPECT_EQ(st.lost_map_outputs(), 4) << "every map of the dead worker runs again, once";
  EXPECT_GE(st.attempts(), 4 + 4 + 4);
  EXPECT_TRUE(SortedOutput(out) == cluster.Expected({"--app=wc"}, inputs));
  RunResult status = cluster.Mrrun({"status", "job-1"});
  EXPECT_THAT(status.output, HasSubstr("4 map(s) re-run (output lost)"));
}

// wc and indexer have combiners: the output is the same with and without
// (--nocombine), and with it the maps write far fewer records.
TEST(MapReduceCombiner, WordCountAndIndexerSameWithAndWithoutCombiner) {
  MrCluster cluster;
  cluster.StartWorker();
  cluster.StartWorker();
  for (const std::string app : {"wc", "indexer"}) {
    std::string with = cluster.Path("out-" + app), without = cluster.Path("out-plain-" + app);
    RunResult a = cluster.Mrrun(WithTexts({"--app=" + app, "--output=" + with, "--reduces=5"}));
    ASSERT_EQ(a.exit_code, 0) << a.output;
    RunResult b = cluster.Mrrun(
        WithTexts({"--app=" + app, "--nocombine", "--output=" + without, "--reduces=5"}));
    ASSERT_EQ(b.exit_code, 0) << b.output;
    std::vector<std::string> expected = cluster.Expected({"--app=" + app}, Texts());
    EXPECT_TRUE(SortedOutput(with) == expected) << app << " with its combiner";
    EXPECT_TRUE(SortedOutput(without) == expected) << app << " without a combiner";
  }
  pb::JobStatus wc = cluster.Status("job-1").value();
  pb::JobStatus wc_plain = cluster.Status("job-2").value();
  EXPECT_GT(Counter(wc, "combine.records_in"), Counter(wc, "combine.records_out"));
  EXPECT_EQ(Counter(wc_plain, "combine.records_in"), 0);
  EXPECT_EQ(Counter(wc, "map.records_out"), Counter(wc_plain, "map.records_out"));
  // Runs store a key once per group, so even uncombined output is compact;
  // the combiner still cuts it by more than half.
  EXPECT_LT(Counter(wc, "map.bytes_out") * 2, Counter(wc_plain, "map.bytes_out"));
  EXPECT_EQ(Counter(wc, "reduce.records_out"), 22107);
}

// Streaming with --combiner: awk sums the map's counts before they are
// written; the result is the wc plugin's.
TEST(MapReduceCombiner, StreamingCombinerCommand) {
  MrCluster cluster;
  cluster.StartWorker();
  cluster.StartWorker();
  std::string out = cluster.Path("out");
  const std::string sum =
      "awk -F '\\t' '{ n[$1] += $2 } END { for (k in n) print k \"\\t\" n[k] }'";
  RunResult run = cluster.Mrrun(
      WithTexts({"--mapper=LC_ALL=C tr -cs A-Za-z '\\n' | awk 'NF { print $0 \"\\t1\" }'",
                 "--combiner=" + sum, "--reducer=" + sum, "--output=" + out, "--reduces=4"}));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(SortedOutput(out) == cluster.Expected({"--app=wc"}, Texts()))
      << "streaming word count with a combiner differs from the wc plugin";
  pb::JobStatus st = cluster.Status("job-1").value();
  EXPECT_GT(Counter(st, "combine.records_in"), 3 * Counter(st, "combine.records_out"));
  RunResult status = cluster.Mrrun({"status"});
  EXPECT_THAT(status.output, HasSubstr("combiner 'awk"));
  // A combiner is for streaming jobs; plugins bring their own.
  RunResult bad = cluster.Mrrun({"--app=wc", "--combiner=cat", "--output=" + out, Texts()[0]});
  EXPECT_EQ(bad.exit_code, 2);
}

// mrrun always prints elapsed times with a unit, even for a job that took
// less than a tenth of a second.
TEST(MapReduceShareNothing, ElapsedTimeAlwaysHasAUnit) {
  MrCluster cluster;
  cluster.StartWorker();
  std::string tiny = cluster.Path("tiny.txt");
  std::ofstream(tiny) << "a b\n";
  RunResult run = cluster.Mrrun(
      {"--app=wc", "--output=" + cluster.Path("out"), "--reduces=1", "--poll-interval=10ms", tiny});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, ::testing::MatchesRegex("(.|\n)*succeeded in [0-9]+\\.[0-9]s;(.|\n)*"));
}

}  // namespace
}  // namespace ds::mr::testing
