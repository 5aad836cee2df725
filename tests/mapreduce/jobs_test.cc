// Jobs through mrrun: two jobs at once, streaming executables, and the
// status / list / cancel / --detach commands.
#include <filesystem>

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

TEST(MapReduceJobs, TwoJobsAtOnceBothMatchSequential) {
  MrCluster cluster;
  for (int i = 0; i < 3; ++i) cluster.StartWorker();
  std::string out1 = cluster.Path("out-wc"), out2 = cluster.Path("out-indexer");
  auto wc = cluster.StartMrrun(WithTexts({"--app=wc", "--output=" + out1, "--reduces=5"}),
                               "mrrun-wc.log");
  auto indexer = cluster.StartMrrun(WithTexts({"--app=indexer", "--output=" + out2, "--reduces=7"}),
                                    "mrrun-indexer.log");
  RunResult r1 = cluster.Finish(*wc, "mrrun-wc.log");
  RunResult r2 = cluster.Finish(*indexer, "mrrun-indexer.log");
  ASSERT_EQ(r1.exit_code, 0) << r1.output;
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  EXPECT_TRUE(SortedOutput(out1) == cluster.Expected({"--app=wc"}, Texts()));
  EXPECT_TRUE(SortedOutput(out2) == cluster.Expected({"--app=indexer"}, Texts()));
  EXPECT_TRUE(std::filesystem::exists(out1 + "/mr-out-4"));
  EXPECT_FALSE(std::filesystem::exists(out1 + "/mr-out-5"));

  RunResult list = cluster.Mrrun({"list"});
  ASSERT_EQ(list.exit_code, 0) << list.output;
  EXPECT_THAT(list.output, HasSubstr("JOB"));
  EXPECT_THAT(list.output, HasSubstr("succeeded  8/8     5/5"));
  EXPECT_THAT(list.output, HasSubstr("succeeded  8/8     7/7"));
}

// Hadoop-streaming style: any executables reading lines on stdin and writing
// key<TAB>value lines. A tr + awk word count gives the wc plugin's output.
TEST(MapReduceJobs, StreamingWordCountMatchesThePlugin) {
  MrCluster cluster;
  cluster.StartWorker();
  cluster.StartWorker();
  std::string out = cluster.Path("out");
  RunResult run = cluster.Mrrun(
      WithTexts({"--mapper=LC_ALL=C tr -cs A-Za-z '\\n' | awk 'NF { print $0 \"\\t1\" }'",
                 "--reducer=awk -F '\\t' '{ n[$1]++ } END { for (k in n) print k \"\\t\" n[k] }'",
                 "--output=" + out, "--reduces=4"}));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(SortedOutput(out) == cluster.Expected({"--app=wc"}, Texts()))
      << "streaming word count differs from the wc plugin";
  RunResult status = cluster.Mrrun({"status"});
  EXPECT_THAT(status.output, HasSubstr("job-1: succeeded"));
  EXPECT_THAT(status.output, HasSubstr("app:       streaming (mapper 'LC_ALL=C tr"));
}

// --split-kb: large inputs become several map tasks of whole lines.
TEST(MapReduceJobs, SplitInputsGiveTheSameWordCount) {
  MrCluster cluster;
  cluster.StartWorker({"--parallel=2"});
  std::string out = cluster.Path("out");
  RunResult run =
      cluster.Mrrun(WithTexts({"--app=wc", "--output=" + out, "--reduces=3", "--split-kb=256"}));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  // 8 texts of 136-580 KiB: 1 to 3 splits each.
  EXPECT_THAT(run.output, HasSubstr("submitted job-1: 17 map task(s)"));
  EXPECT_TRUE(SortedOutput(out) == cluster.Expected({"--app=wc"}, Texts()));
  auto st = cluster.Status("job-1");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->maps_total(), 17);
  EXPECT_EQ(st->counters().at("map.bytes_in"), 3301104) << "every byte read exactly once";
}

// A map task's output larger than the worker's memory budget is spilled in
// sorted runs to its work dir and merged (combining across runs); the output
// does not change. (Before map output was buffered, this budget bounded the
// reduce-side sort: reduces now merge sorted runs and need no sort.)
TEST(MapReduceJobs, MapOutputSpillsBeyondTheMemoryBudget) {
  MrCluster cluster({.worker_flags = {"--sort-memory-mb=1"}});
  cluster.StartWorker();
  cluster.StartWorker();
  std::string out = cluster.Path("out");
  RunResult run = cluster.Mrrun(WithTexts({"--app=wc", "--output=" + out, "--reduces=2"}));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(SortedOutput(out) == cluster.Expected({"--app=wc"}, Texts()));
  // Every line four times, under four keys: 4x each text in values, past
  // 1 MiB for the larger texts.
  const std::vector<std::string> big = {
      "--mapper=awk '{ for (i = 1; i <= 4; i++) print i $1 \"\\t\" $0 }'", "--reducer=cat"};
  std::vector<std::string> args = WithTexts({"--output=" + out + "-big", "--reduces=2"});
  args.insert(args.begin(), big.begin(), big.end());
  RunResult lines = cluster.Mrrun(args);
  ASSERT_EQ(lines.exit_code, 0) << lines.output;
  EXPECT_TRUE(SortedOutput(out + "-big") == cluster.Expected(big, Texts()));
  EXPECT_GE(cluster.Status("job-2")->counters().at("map.spilled_runs"), 4);
}

// Apps count things with Emitter::Count; `mrrun status` shows them.
TEST(MapReduceJobs, UserCountersReachStatus) {
  MrCluster cluster({.worker_env = {"MR_GREP_PATTERN=Sherlock"}});
  cluster.StartWorker();
  std::string out = cluster.Path("out");
  RunResult run = cluster.Mrrun(WithTexts({"--app=grep", "--output=" + out, "--reduces=2"}));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  size_t lines = SortedOutput(out).size();
  ASSERT_GT(lines, 0u);
  RunResult status = cluster.Mrrun({"status", "job-1"});
  EXPECT_THAT(status.output, HasSubstr(absl::StrCat("user.matches         ", lines, "\n")));
}

TEST(MapReduceJobs, DetachStatusAndCancel) {
  MrCluster cluster;  // no workers: jobs stay queued
  std::string out = cluster.Path("out");
  RunResult submit = cluster.Mrrun(WithTexts({"--app=wc", "--output=" + out, "--detach"}));
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  EXPECT_EQ(submit.output, "job-1\n");

  RunResult status = cluster.Mrrun({"status", "1"});
  ASSERT_EQ(status.exit_code, 0) << status.output;
  EXPECT_THAT(status.output, HasSubstr("job-1: queued"));
  EXPECT_THAT(status.output, HasSubstr("progress:  maps 0/8, reduces 0/10"));
  EXPECT_THAT(status.output, HasSubstr("output:    " + out + "/mr-out-0..9"));

  // A second job, followed by a waiting mrrun, cancelled from another one.
  auto waiting = cluster.StartMrrun(
      WithTexts({"--app=wc", "--output=" + out, "--progress-interval=100ms"}), "waiting.log");
  // Cancel once mrrun has shown the job waiting.
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (ReadAll(cluster.Path("waiting.log")).find("job-2 queued") == std::string::npos) {
    ASSERT_LT(absl::Now(), deadline) << ReadAll(cluster.Path("waiting.log"));
    absl::SleepFor(absl::Milliseconds(20));
  }
  RunResult cancel = cluster.Mrrun({"cancel", "job-2"});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.output;
  EXPECT_EQ(cancel.output, "job-2: cancelled\n");
  RunResult waited = cluster.Finish(*waiting, "waiting.log");
  EXPECT_EQ(waited.exit_code, 1);
  EXPECT_THAT(waited.output, HasSubstr("job-2 queued: maps 0/8, reduces 0/10"));
  EXPECT_THAT(waited.output, HasSubstr("mrrun: job-2 cancelled: cancelled by user"));

  // A worker arriving now runs job 1 only; job 2 stays cancelled.
  cluster.StartWorker();
  ASSERT_TRUE(cluster.WaitForJob(
      "job-1", [](const pb::JobStatus& s) { return s.state() == pb::SUCCEEDED; },
      absl::Seconds(60)));
  EXPECT_EQ(cluster.Status("job-2")->state(), pb::CANCELLED);
  EXPECT_EQ(cluster.Status("job-2")->attempts(), 0);
  RunResult again = cluster.Mrrun({"cancel", "job-1"});
  EXPECT_EQ(again.output, "job-1: already succeeded\n");

  RunResult unknown = cluster.Mrrun({"cancel", "job-9"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.output, HasSubstr("no job job-9"));
}

// Ctrl-C stops mrrun's waiting, not the job.
TEST(MapReduceJobs, InterruptedMrrunLeavesTheJobRunning) {
  MrCluster cluster;  // no workers: the job stays queued
  auto waiting =
      cluster.StartMrrun(WithTexts({"--app=wc", "--output=" + cluster.Path("out")}), "waiting.log");
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (ReadAll(cluster.Path("waiting.log")).find("job-1 queued") == std::string::npos) {
    ASSERT_LT(absl::Now(), deadline) << ReadAll(cluster.Path("waiting.log"));
    absl::SleepFor(absl::Milliseconds(20));
  }
  waiting->Signal(SIGINT);
  RunResult r = cluster.Finish(*waiting, "waiting.log");
  EXPECT_EQ(r.exit_code, 130);
  EXPECT_THAT(r.output, HasSubstr("job-1 goes on (mrrun status job-1, mrrun cancel job-1)"));
  EXPECT_EQ(cluster.Status("job-1")->state(), pb::QUEUED);
}

TEST(MapReduceJobs, MrrunRejectsBadUsage) {
  MrCluster cluster;
  std::string in = Texts()[0];
  EXPECT_EQ(cluster.Mrrun({"--app=wc", "--input", in}).exit_code, 2);         // no --output
  EXPECT_EQ(cluster.Mrrun({"--output=/tmp/x", "--input", in}).exit_code, 2);  // no app
  EXPECT_EQ(
      cluster.Mrrun({"--app=wc", "--mapper=cat", "--reducer=cat", "--output=/tmp/x", "--input", in})
          .exit_code,
      2);
  EXPECT_EQ(cluster.Mrrun({"--app=wc", "--output=/tmp/x"}).exit_code, 2);  // no input
  EXPECT_EQ(cluster.Mrrun({"--app=wc", "--reduces=0", "--output=/tmp/x", in}).exit_code, 2);
  // An unknown flag is invalid usage (common/init.cc checks names and values
  // before Abseil's parser, which would exit 1).
  RunResult bad_flag = cluster.Mrrun({"--no-such-flag"});
  EXPECT_EQ(bad_flag.exit_code, 2);
  EXPECT_THAT(bad_flag.output, HasSubstr("no_such_flag"));
  RunResult help = cluster.Mrrun({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.output, HasSubstr("mrrun status [JOB]"));
  EXPECT_THAT(help.output, HasSubstr("--detach"));
}

TEST(MapReduceJobs, UnreachableCoordinatorIsAnError) {
  MrCluster cluster;
  cluster.coordinator().Kill();
  RunResult run = cluster.Mrrun({"list", "--rpc-timeout=1s"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.output, HasSubstr("unreachable"));
}

}  // namespace
}  // namespace ds::mr::testing
