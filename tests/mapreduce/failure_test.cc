// Bad input: each case ends with a failed job (or a refused submission) and a
// message that names the cause, after a bounded number of attempts; nothing
// hangs.
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/mapreduce/mr_cluster.h"

namespace ds::mr::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Text(int i) { return Texts()[i]; }

TEST(MapReduceFailure, MissingInputIsRefusedAtSubmission) {
  MrCluster cluster;
  cluster.StartWorker();
  std::string missing = cluster.Path("no-such-file.txt");
  RunResult run =
      cluster.Mrrun({"--app=wc", "--output=" + cluster.Path("out"), "--input", Text(0), missing});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.output, HasSubstr("input " + missing + ": No such file or directory"));
  RunResult list = cluster.Mrrun({"list"});
  EXPECT_THAT(list.output, Not(HasSubstr("job-1"))) << "nothing should have been submitted";
}

TEST(MapReduceFailure, InputVanishingAfterSubmissionFailsTheJob) {
  MrCluster cluster;
  std::string input = cluster.Path("input.txt");
  std::filesystem::copy_file(Text(0), input);
  // No worker yet: the job waits, queued, while its input disappears.
  RunResult submit =
      cluster.Mrrun({"--app=wc", "--output=" + cluster.Path("out"), "--detach", "--input", input});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  std::filesystem::remove(input);
  cluster.StartWorker();
  ASSERT_TRUE(cluster.WaitForJob(
      "job-1", [](const pb::JobStatus& s) { return s.state() == pb::FAILED; }, absl::Seconds(30)));
  pb::JobStatus st = cluster.Status("job-1").value();
  EXPECT_THAT(st.error(), HasSubstr("map task 0 (input " + input + ") failed 4 times"));
  EXPECT_THAT(st.error(), HasSubstr("No such file or directory"));
  EXPECT_EQ(st.failed_attempts(), 4);
}

// Workers report their bundled apps when they register; mrrun refuses a name
// none of them has before submitting anything.
TEST(MapReduceFailure, UnknownAppIsRefusedBeforeSubmission) {
  MrCluster cluster;
  cluster.StartWorker();
  ASSERT_TRUE(cluster.WaitForWorkers(1));
  RunResult run =
      cluster.Mrrun({"--app=no_such_app", "--output=" + cluster.Path("out"), "--input", Text(0)});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_THAT(run.output, HasSubstr("unknown app 'no_such_app'"));
  EXPECT_THAT(run.output, HasSubstr("bundled apps: "));
  EXPECT_THAT(run.output, HasSubstr("wc"));
  RunResult list = cluster.Mrrun({"list"});
  EXPECT_THAT(list.output, Not(HasSubstr("job-1"))) << "nothing should have been submitted";
}

// With no worker registered yet, mrrun cannot check the name: the job is
// queued, and the first worker fails it with the reason.
TEST(MapReduceFailure, UnknownAppQueuedBeforeAnyWorkerFailsTheJob) {
  MrCluster cluster;
  RunResult submit = cluster.Mrrun(
      {"--app=no_such_app", "--output=" + cluster.Path("out"), "--detach", "--input", Text(0)});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  cluster.StartWorker();
  ASSERT_TRUE(cluster.WaitForJob(
      "job-1", [](const pb::JobStatus& s) { return s.state() == pb::FAILED; }, absl::Seconds(30)));
  pb::JobStatus st = cluster.Status("job-1").value();
  EXPECT_THAT(st.error(), HasSubstr("map task 0"));
  EXPECT_THAT(st.error(), HasSubstr("failed 4 times"));
  EXPECT_THAT(st.error(), HasSubstr("unknown app 'no_such_app'"));
}

TEST(MapReduceFailure, PluginThatIsNotASharedLibraryFailsTheJob) {
  MrCluster cluster;
  cluster.StartWorker();
  std::string bogus = cluster.Path("bogus.so");
  std::ofstream(bogus) << "not an ELF file\n";
  RunResult run = cluster.Mrrun({"--app=" + bogus, "--output=" + cluster.Path("out"),
                                 "--max-attempts=2", "--input", Text(0)});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.output, HasSubstr("failed 2 times"));
  EXPECT_THAT(run.output, HasSubstr("cannot load app " + bogus));
}

TEST(MapReduceFailure, SharedLibraryWithoutTheEntryPointFailsTheJob) {
  MrCluster cluster;
  cluster.StartWorker();
  RunResult run = cluster.Mrrun({"--app=" + LibPath("mr-test-no_entry"),
                                 "--output=" + cluster.Path("out"), "--input", Text(0)});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.output, HasSubstr("does not export ds_mr_get_app"));
}

// The plugin runs inside the worker, so each crash takes the worker down; the
// coordinator sees silence, and after --max-attempts silences the job fails.
// Workers are restarted in a loop as an init system would.
TEST(MapReduceFailure, PluginCrashingOnEveryAttemptFailsTheJob) {
  MrCluster cluster({.coordinator_flags = {"--task-timeout=1s"}});
  cluster.StartWorker();
  cluster.StartWorker();
  RunResult submit =
      cluster.Mrrun({"--app=" + LibPath("mr-test-always_crash"), "--output=" + cluster.Path("out"),
                     "--max-attempts=3", "--detach", "--input", Text(0)});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  auto st = cluster.KeepWorkersAliveUntilDone("job-1", absl::Seconds(60));
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->state(), pb::FAILED);
  EXPECT_THAT(st->error(), HasSubstr("map task 0 (input " + Text(0) + ") failed 3 times"));
  EXPECT_THAT(st->error(), HasSubstr("went silent"));
  EXPECT_GE(cluster.worker_restarts(), 3);
}

TEST(MapReduceFailure, StreamingCommandExitingNonZeroFailsTheJob) {
  MrCluster cluster;
  cluster.StartWorker();
  RunResult run = cluster.Mrrun({"--mapper=echo mapper is broken >&2; exit 3", "--reducer=cat",
                                 "--output=" + cluster.Path("out"), "--input", Text(0)});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.output, HasSubstr("exited with status 3"));
  EXPECT_THAT(run.output, HasSubstr("stderr: mapper is broken"));
  EXPECT_THAT(run.output, HasSubstr("failed 4 times"));
}

TEST(MapReduceFailure, FailingReducerFailsTheJobInTheReducePhase) {
  MrCluster cluster;
  cluster.StartWorker();
  RunResult run = cluster.Mrrun({"--mapper=cat", "--reducer=false", "--reduces=1",
                                 "--output=" + cluster.Path("out"), "--input", Text(0)});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.output, HasSubstr("reduce task 0 failed 4 times"));
  EXPECT_THAT(run.output, HasSubstr("command 'false' exited with status 1"));
}

TEST(MapReduceFailure, UnwritableOutputDirectoryFailsTheJob) {
  MrCluster cluster;
  cluster.StartWorker();
  // Below a regular file: no directory can be made there, even by root (the
  // usual permission bits would not stop a test running as root).
  std::string file = cluster.Path("a-file");
  std::ofstream(file) << "x";
  RunResult run = cluster.Mrrun({"--app=wc", "--output=" + file + "/out", "--input", Text(0)});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.output, HasSubstr("failed 4 times"));
  EXPECT_THAT(run.output, HasSubstr("Not a directory"));
}

}  // namespace
}  // namespace ds::mr::testing
