// The 6.824 lab 1 test script (test-mr.sh), part 1: word count, indexer and
// early exit, with the real mr-coordinator, mr-worker, mrrun and mr-sequential
// binaries. Outputs are compared the way the script does: every line of every
// mr-out* file, blank lines dropped, sorted, against mr-sequential's.
#include <filesystem>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/mapreduce/mr_cluster.h"

namespace ds::mr::testing {
namespace {

using ::testing::HasSubstr;

std::vector<std::string> JobArgs(const std::string& app, const std::string& out) {
  std::vector<std::string> args = {"--app=" + app, "--output=" + out, "--reduces=10", "--input"};
  for (const std::string& t : Texts()) args.push_back(t);
  return args;
}

TEST(MapReduceLab, WordCountMatchesSequential) {
  MrCluster cluster;
  for (int i = 0; i < 3; ++i) cluster.StartWorker();
  std::string out = cluster.Path("out");
  RunResult run = cluster.Mrrun(JobArgs("wc", out));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("output: " + out + "/mr-out-0"));

  std::vector<std::string> expected = cluster.Expected({"--app=wc"}, Texts());
  ASSERT_EQ(expected.size(), 22107u) << "the 6.824 reference has 22107 distinct words";
  EXPECT_EQ(expected.front(), "A 509");
  EXPECT_TRUE(SortedOutput(out) == expected) << "wc output differs from mr-sequential";
  for (int r = 0; r < 10; ++r) {
    EXPECT_TRUE(std::filesystem::exists(absl::StrCat(out, "/mr-out-", r))) << r;
  }

  // Counters are summed once per task: records out of the reduces = words.
  RunResult status = cluster.Mrrun({"status", "job-1"});
  ASSERT_EQ(status.exit_code, 0) << status.output;
  EXPECT_THAT(status.output, HasSubstr("job-1: succeeded"));
  EXPECT_THAT(status.output, HasSubstr("reduce.records_out   22107"));
  EXPECT_THAT(status.output, HasSubstr("map.records_in       8"));

  // Intermediate files live in the workers' own work dirs, never in the
  // output directory, which holds exactly the R output files.
  EXPECT_FALSE(std::filesystem::exists(out + "/.mr-intermediate"));
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(out)) {
    EXPECT_EQ(e.path().filename().string().rfind("mr-out-", 0), 0u) << e.path();
    ++files;
  }
  EXPECT_EQ(files, 10);
}

TEST(MapReduceLab, IndexerMatchesSequential) {
  MrCluster cluster;
  cluster.StartWorker();
  cluster.StartWorker();
  std::string out = cluster.Path("out");
  RunResult run = cluster.Mrrun(JobArgs("indexer", out));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::vector<std::string> expected = cluster.Expected({"--app=indexer"}, Texts());
  ASSERT_FALSE(expected.empty());
  EXPECT_TRUE(SortedOutput(out) == expected) << "indexer output differs from mr-sequential";
}

// 6.824: no process may exit while output is still being produced. Here: once
// mrrun reports success, the output is complete and final: it is the same
// after every worker and the coordinator have stopped. Reduces of the
// "sherlock" and "tom" inputs take 3 s longer than the others.
TEST(MapReduceLab, OutputIsCompleteWhenTheJobSucceeds) {
  MrCluster cluster;
  for (int i = 0; i < 3; ++i) cluster.StartWorker({"--coordinator-grace=1s"});
  std::string out = cluster.Path("out");
  RunResult run = cluster.Mrrun(JobArgs("early_exit", out));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::vector<std::string> initial = SortedOutput(out);

  // Workers stay up while the coordinator is (they must not quit just
  // because there is no task right now)...
  absl::SleepFor(absl::Milliseconds(500));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(cluster.worker(i).running()) << "worker " << i;
  // ...and leave cleanly on their own once it is gone for their grace period.
  cluster.coordinator().Terminate(absl::Seconds(10));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(cluster.worker(i).WaitFor(absl::Seconds(20)), std::optional<int>(0))
        << "worker " << i;
  }
  std::vector<std::string> final_output = SortedOutput(out);
  EXPECT_TRUE(initial == final_output) << "output changed after the job was reported done";
  EXPECT_TRUE(final_output == cluster.Expected({"--app=early_exit"}, Texts()));
}

}  // namespace
}  // namespace ds::mr::testing
