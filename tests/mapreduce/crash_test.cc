// Crashes and hangs: the 6.824 crash test (workers that die or stall at random,
// restarted in a loop), kill -9 of the coordinator in the middle of a job, and
// a worker paused (SIGSTOP) inside a task. The output must be exactly the
// sequential one every time.
#include "gtest/gtest.h"
#include "tests/mapreduce/mr_cluster.h"

namespace ds::mr::testing {
namespace {

std::vector<std::string> Inputs(std::vector<std::string> args) {
  args.push_back("--input");
  for (const std::string& t : Texts()) args.push_back(t);
  return args;
}

// test-mr.sh's crash test. The crash app kills its worker (33%) or stalls it
// (33%) before every map and reduce call. Differences, to keep the suite
// fast: stalls last up to 3 s instead of 10 s, and silent workers are given up
// on after 1 s instead of 10 s. A task may fail many times here by design, so
// the job allows 30 attempts per task.
TEST(MapReduceCrash, CrashingWorkersStillGiveTheSequentialOutput) {
  MrCluster cluster({.coordinator_flags = {"--task-timeout=1s", "--backup-min-runtime=1s"},
                     .worker_env = {"MR_CRASH_MAX_SLEEP_MS=3000"}});
  for (int i = 0; i < 4; ++i) cluster.StartWorker();
  std::string out = cluster.Path("out");
  RunResult submit = cluster.Mrrun(
      Inputs({"--app=crash", "--output=" + out, "--reduces=10", "--max-attempts=30", "--detach"}));
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  std::string job = JobIdFrom(submit);
  ASSERT_EQ(job, "job-1");

  auto final_status = cluster.KeepWorkersAliveUntilDone(job, absl::Seconds(120));
  ASSERT_TRUE(final_status.ok()) << final_status.status();
  ASSERT_EQ(final_status->state(), pb::SUCCEEDED) << final_status->error();
  std::vector<std::string> expected = cluster.Expected({"--app=nocrash"}, Texts());
  ASSERT_EQ(expected.size(), 4u);
  EXPECT_TRUE(SortedOutput(out) == expected) << "crash output differs from nocrash sequential";
  // The test tested something: workers did die, and tasks were re-run.
  EXPECT_GT(cluster.worker_restarts(), 0);
  EXPECT_GT(final_status->failed_attempts(), 0);
}

// Job state lives in RocksDB: kill -9 the coordinator once in the map phase
// and once in the reduce phase; after each restart the job resumes, the
// waiting mrrun rides through the outage, and the output is the sequential
// one. SLOW_WC_MS stretches both phases so the kills land inside them.
TEST(MapReduceCrash, CoordinatorKilledMidJobResumesAfterRestart) {
  MrCluster cluster({.coordinator_flags = {"--task-timeout=3s"},
                     .worker_flags = {"--coordinator-grace=60s"},
                     .worker_env = {"SLOW_WC_MS=300"}});
  cluster.StartWorker();
  cluster.StartWorker();
  std::string out = cluster.Path("out");
  auto mrrun = cluster.StartMrrun(
      Inputs({"--app=" + LibPath("mr-test-slow_wc"), "--output=" + out, "--reduces=10"}),
      "mrrun-wait.log");

  ASSERT_TRUE(cluster.WaitForJob(
      "job-1", [](const pb::JobStatus& s) { return s.maps_done() >= 1; }, absl::Seconds(30)));
  auto before = cluster.Status("job-1");
  ASSERT_TRUE(before.ok());
  ASSERT_EQ(before->state(), pb::MAPPING) << "too late: the map phase is over";
  cluster.coordinator().Kill();
  cluster.StartCoordinator();
  auto after = cluster.Status("job-1");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_GE(after->maps_done(), before->maps_done()) << "finished maps were forgotten";

  ASSERT_TRUE(cluster.WaitForJob(
      "job-1", [](const pb::JobStatus& s) { return s.reduces_done() >= 1; }, absl::Seconds(60)));
  before = cluster.Status("job-1");
  ASSERT_TRUE(before.ok());
  ASSERT_EQ(before->state(), pb::REDUCING) << "too late: the job is over";
  cluster.coordinator().Kill();
  cluster.StartCoordinator();

  RunResult run = cluster.Finish(*mrrun, "mrrun-wait.log", absl::Seconds(90));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(SortedOutput(out) == cluster.Expected({"--app=wc"}, Texts()))
      << "output after coordinator restarts differs from mr-sequential";
  auto status = cluster.Status("job-1");
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->state(), pb::SUCCEEDED);
  EXPECT_EQ(status->counters().at("reduce.records_out"), 22107);
}

// A worker that hangs (SIGSTOP: its heartbeats stop too) in the middle of a
// map loses the task after --task-timeout; another worker finishes the job.
// When the hung worker wakes up, its late result is ignored and the output
// stays right.
TEST(MapReduceCrash, HungWorkersTaskIsReissued) {
  MrCluster cluster({.coordinator_flags = {"--task-timeout=2s"}});
  // The first worker takes 5 s per map, so it is surely inside one when paused.
  cluster.StartWorker({}, {"SLOW_WC_MS=5000"});
  std::string out = cluster.Path("out");
  std::vector<std::string> inputs = {Texts()[0], Texts()[1], Texts()[2]};
  RunResult submit =
      cluster.Mrrun({"--app=" + LibPath("mr-test-slow_wc"), "--output=" + out, "--reduces=3",
                     "--detach", "--input", inputs[0], inputs[1], inputs[2]});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  ASSERT_TRUE(cluster.WaitForJob(
      "job-1", [](const pb::JobStatus& s) { return s.attempts() >= 1; }, absl::Seconds(30)));
  cluster.worker(0).Stop();
  ASSERT_EQ(cluster.Status("job-1")->maps_done(), 0) << "the slow map finished too early";

  cluster.StartWorker();
  ASSERT_TRUE(cluster.WaitForJob(
      "job-1", [](const pb::JobStatus& s) { return s.state() == pb::SUCCEEDED; },
      absl::Seconds(60)));
  pb::JobStatus st = cluster.Status("job-1").value();
  EXPECT_GE(st.failed_attempts(), 1);
  std::vector<std::string> expected = cluster.Expected({"--app=wc"}, inputs);
  EXPECT_TRUE(SortedOutput(out) == expected);

  // Wake the hung worker: it finishes its stale map, reports it (ignored) and
  // exits on SIGTERM; nothing it did changes the output.
  cluster.worker(0).Continue();
  EXPECT_EQ(cluster.worker(0).Terminate(absl::Seconds(30)), 0);
  EXPECT_TRUE(SortedOutput(out) == expected) << "a stale attempt changed the output";
  EXPECT_EQ(cluster.Status("job-1")->state(), pb::SUCCEEDED);
}

}  // namespace
}  // namespace ds::mr::testing
