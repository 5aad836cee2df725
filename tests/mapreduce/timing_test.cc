// The 6.824 lab 1 test script (test-mr.sh), part 2: map parallelism, reduce
// parallelism and job count, with the real binaries. The mtiming, rtiming and
// jobcount apps leave marker files in the workers' working directory (the
// cluster's temporary directory) to see each other.
#include <algorithm>
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/mapreduce/mr_cluster.h"

namespace ds::mr::testing {
namespace {

std::vector<std::string> JobArgs(const std::string& app, const std::string& out) {
  std::vector<std::string> args = {"--app=" + app, "--output=" + out, "--reduces=10", "--input"};
  for (const std::string& t : Texts()) args.push_back(t);
  return args;
}

// Lines for which `match` holds (the script greps; std::regex trips GCC's
// -Wmaybe-uninitialized under the sanitizers).
template <typename Match>
int CountLines(const std::vector<std::string>& lines, Match match) {
  return static_cast<int>(std::count_if(lines.begin(), lines.end(), match));
}

// Map tasks go to several workers at once.
TEST(MapReduceTiming, MapsRunInParallel) {
  MrCluster cluster;
  cluster.StartWorker();
  cluster.StartWorker();
  std::string out = cluster.Path("out");
  RunResult run = cluster.Mrrun(JobArgs("mtiming", out));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::vector<std::string> lines = SortedOutput(out);
  // One "times-<pid>" key per worker process that ran maps: both did.
  // grep '^times-'
  EXPECT_EQ(CountLines(lines, [](const std::string& l) { return l.rfind("times-", 0) == 0; }), 2)
      << "saw a different number of workers than 2";
  // grep '^parallel.* 2'
  EXPECT_GE(CountLines(lines,
                       [](const std::string& l) {
                         return l.rfind("parallel", 0) == 0 && l.find(" 2") != std::string::npos;
                       }),
            1)
      << "map workers did not run in parallel";
}

// Reduce tasks go to several workers at once.
TEST(MapReduceTiming, ReducesRunInParallel) {
  MrCluster cluster;
  cluster.StartWorker();
  cluster.StartWorker();
  std::string out = cluster.Path("out");
  RunResult run = cluster.Mrrun(JobArgs("rtiming", out));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  // grep '^[a-z] 2'
  EXPECT_GE(CountLines(SortedOutput(out),
                       [](const std::string& l) {
                         return l.size() >= 3 && l[0] >= 'a' && l[0] <= 'z' && l[1] == ' ' &&
                                l[2] == '2';
                       }),
            2)
      << "too few parallel reduces";
}

// Without failures every map runs exactly once, even though each takes 2-5 s,
// and workers that join after the job ran nothing. Backup tasks are off: a
// backup is a deliberate second run, which this test would count.
TEST(MapReduceTiming, EachMapRunsExactlyOnce) {
  MrCluster cluster({.coordinator_flags = {"--backup-remaining-fraction=-1"}});
  cluster.StartWorker();
  cluster.StartWorker();
  std::string out = cluster.Path("out");
  RunResult run = cluster.Mrrun(JobArgs("jobcount", out), absl::Seconds(80));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::vector<std::string> lines = SortedOutput(out);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "a 8") << "map jobs ran an incorrect number of times";

  cluster.StartWorker();
  cluster.StartWorker();
  absl::SleepFor(absl::Seconds(1));
  int markers = 0;
  for (const auto& e : std::filesystem::directory_iterator(cluster.dir())) {
    if (e.path().filename().string().rfind("mr-worker-jobcount-", 0) == 0) ++markers;
  }
  EXPECT_EQ(markers, 8) << "a map ran again after the job finished";
  auto status = cluster.Status("job-1");
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->attempts(), 8 + 10);
}

}  // namespace
}  // namespace ds::mr::testing
