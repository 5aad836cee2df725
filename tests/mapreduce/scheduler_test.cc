// The coordinator's scheduler as a pure state machine in virtual time: every
// call gets the current time from the test, so timeouts and backup decisions
// are exact and nothing sleeps.
#include "coordinator/scheduler.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ds::mr {
namespace {

using ::testing::HasSubstr;

pb::JobSpec Spec(int maps, int reduces) {
  pb::JobSpec spec;
  spec.set_app("wc");
  for (int i = 0; i < maps; ++i) spec.add_inputs(absl::StrCat("/in/file-", i));
  spec.set_reduces(reduces);
  spec.set_output_dir("/out");
  return spec;
}

// Backups off, so that timeout and re-issue tests see only those rules.
SchedulerOptions Options() {
  SchedulerOptions o;
  o.task_timeout = absl::Seconds(10);
  o.max_attempts = 3;
  o.backup_remaining_fraction = -1;
  return o;
}

SchedulerOptions BackupOptions() {
  SchedulerOptions o = Options();
  o.backup_remaining_fraction = 0.2;
  o.backup_min_runtime = absl::Seconds(5);
  o.backup_slowdown = 2.0;
  return o;
}

class SchedulerTest : public ::testing::Test {
 protected:
  explicit SchedulerTest(SchedulerOptions options = Options()) : s_(options) {}

  std::string Submit(int maps, int reduces) {
    auto id = s_.Submit(Spec(maps, reduces), now_);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.value_or("");
  }
  std::optional<pb::Task> Request(const std::string& worker) {
    return s_.RequestTask(worker, now_);
  }
  void Report(const pb::Task& t, bool ok, const std::string& worker = "w",
              std::map<std::string, int64_t> counters = {}) {
    pb::ReportTaskRequest r;
    r.set_worker_id(worker);
    r.set_job_id(t.job_id());
    r.set_type(t.type());
    r.set_index(t.index());
    r.set_attempt_id(t.attempt_id());
    r.set_ok(ok);
    if (!ok) r.set_error("boom");
    if (t.type() == pb::MAP) {
      r.set_output_location("/work/" + t.job_id());
      r.set_output_address(worker + ":7000");
    }
    for (auto& [k, v] : counters) (*r.mutable_counters())[k] = v;
    s_.ReportTask(r, now_);
  }
  bool Beat(const pb::Task& t, const std::string& worker = "w") {
    pb::HeartbeatRequest h;
    h.set_worker_id(worker);
    h.set_job_id(t.job_id());
    h.set_type(t.type());
    h.set_index(t.index());
    h.set_attempt_id(t.attempt_id());
    return s_.Heartbeat(h, now_);
  }
  pb::JobStatus Status(const std::string& id) { return s_.Status(id).value(); }
  // Hands out and completes every task of the current phase.
  void FinishPhase(const std::string& id) {
    while (auto t = Request("w")) {
      ASSERT_EQ(t->job_id(), id);
      Report(*t, true);
    }
  }
  void Advance(absl::Duration d) {
    now_ += d;
    s_.Tick(now_);
  }

  absl::Time now_ = absl::FromUnixSeconds(1700000000);
  Scheduler s_;
};

TEST_F(SchedulerTest, SubmitRejectsIncompleteSpecs) {
  pb::JobSpec no_inputs = Spec(0, 1);
  EXPECT_EQ(s_.Submit(no_inputs, now_).status().code(), absl::StatusCode::kInvalidArgument);
  pb::JobSpec no_reduces = Spec(1, 0);
  EXPECT_EQ(s_.Submit(no_reduces, now_).status().code(), absl::StatusCode::kInvalidArgument);
  pb::JobSpec both = Spec(1, 1);
  both.set_mapper("cat");
  both.set_reducer("cat");
  EXPECT_EQ(s_.Submit(both, now_).status().code(), absl::StatusCode::kInvalidArgument);
  pb::JobSpec half_streaming = Spec(1, 1);
  half_streaming.clear_app();
  half_streaming.set_mapper("cat");
  EXPECT_EQ(s_.Submit(half_streaming, now_).status().code(), absl::StatusCode::kInvalidArgument);
  pb::JobSpec no_output = Spec(1, 1);
  no_output.clear_output_dir();
  EXPECT_EQ(s_.Submit(no_output, now_).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SchedulerTest, OneMapTaskPerInputThenReducesAfterEveryMap) {
  std::string id = Submit(3, 2);
  EXPECT_EQ(Status(id).state(), pb::QUEUED);
  std::vector<pb::Task> maps;
  for (int i = 0; i < 3; ++i) {
    auto t = Request(absl::StrCat("w", i));
    ASSERT_TRUE(t.has_value());
    EXPECT_EQ(t->type(), pb::MAP);
    EXPECT_EQ(t->index(), i);
    maps.push_back(*t);
  }
  EXPECT_EQ(Status(id).state(), pb::MAPPING);
  // Every map is out: an idle worker gets nothing, in particular no reduce.
  EXPECT_FALSE(Request("w9").has_value());
  Report(maps[0], true);
  Report(maps[1], true);
  EXPECT_FALSE(Request("w9").has_value()) << "a reduce started before every map finished";
  Report(maps[2], true);
  EXPECT_EQ(Status(id).state(), pb::REDUCING);
  auto r0 = Request("w0");
  auto r1 = Request("w1");
  ASSERT_TRUE(r0 && r1);
  EXPECT_EQ(r0->type(), pb::REDUCE);
  EXPECT_EQ(r1->index(), 1);
  // A reduce reads every map's output: it is told where each one is.
  ASSERT_EQ(r0->map_locations_size(), 3);
  EXPECT_EQ(r0->map_locations(2), "/work/" + id);
  Report(*r0, true);
  Report(*r1, true);
  pb::JobStatus st = Status(id);
  EXPECT_EQ(st.state(), pb::SUCCEEDED);
  EXPECT_EQ(st.maps_done(), 3);
  EXPECT_EQ(st.reduces_done(), 2);
  EXPECT_EQ(st.attempts(), 5);
  EXPECT_EQ(st.failed_attempts(), 0);
}

TEST_F(SchedulerTest, SplitsMakeOneMapTaskEach) {
  pb::JobSpec spec = Spec(1, 1);
  for (int i = 0; i < 3; ++i) {
    pb::InputSplit* split = spec.add_splits();
    split->set_path("/in/big");
    split->set_offset(i * 100);
    split->set_length(100);
  }
  std::string id = s_.Submit(spec, now_).value();
  EXPECT_EQ(Status(id).maps_total(), 3);
  for (int i = 0; i < 3; ++i) {
    auto t = Request("w");
    ASSERT_TRUE(t.has_value());
    ASSERT_EQ(t->index(), 0);
    Report(*t, false);
  }
  // Failures name the split's byte range.
  EXPECT_THAT(Status(id).error(), HasSubstr("map task 0 (input /in/big bytes 0-99) failed"));

  pb::JobSpec bad = Spec(1, 1);
  bad.add_splits()->set_path("/in/big");  // length 0
  EXPECT_EQ(s_.Submit(bad, now_).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SchedulerTest, HeartbeatsKeepASlowTaskAlive) {
  std::string id = Submit(1, 1);
  auto t = Request("w");
  for (int i = 0; i < 30; ++i) {
    Advance(absl::Seconds(1));
    ASSERT_TRUE(Beat(*t));
  }
  // 30 s of work, never silent for 10 s: not re-issued, nothing failed.
  EXPECT_EQ(Status(id).failed_attempts(), 0);
  EXPECT_EQ(s_.running_attempts(), 1u);
}

TEST_F(SchedulerTest, SilentWorkersTaskIsReissuedAfterTheTimeout) {
  std::string id = Submit(1, 1);
  auto t = Request("dead");
  Advance(absl::Seconds(10));
  EXPECT_FALSE(Request("other").has_value()) << "re-issued before the timeout";
  Advance(absl::Milliseconds(1));
  auto again = Request("other");
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->type(), pb::MAP);
  EXPECT_EQ(again->index(), 0);
  EXPECT_NE(again->attempt_id(), t->attempt_id());
  pb::JobStatus st = Status(id);
  EXPECT_EQ(st.failed_attempts(), 1);
  EXPECT_EQ(st.attempts(), 2);
}

TEST_F(SchedulerTest, LateResultOfATimedOutAttemptStillCounts) {
  // The worker was only slow (paused, partitioned): its result is as good as
  // any; first result wins.
  std::string id = Submit(1, 1);
  auto slow = Request("slow");
  Advance(absl::Seconds(11));
  auto second = Request("fast");
  ASSERT_TRUE(second.has_value());
  Report(*slow, true, "slow");
  EXPECT_EQ(Status(id).maps_done(), 1);
  EXPECT_FALSE(Beat(*second, "fast")) << "the duplicate should be told to stop";
  Report(*second, true, "fast");
  EXPECT_EQ(Status(id).maps_done(), 1);
}

TEST_F(SchedulerTest, DuplicateCompletionsCountOnce) {
  std::string id = Submit(1, 1);
  auto t = Request("w");
  Report(*t, true, "w", {{"map.records_out", 7}});
  Report(*t, true, "w", {{"map.records_out", 7}});
  pb::JobStatus st = Status(id);
  EXPECT_EQ(st.maps_done(), 1);
  EXPECT_EQ(st.counters().at("map.records_out"), 7);
}

TEST_F(SchedulerTest, JobFailsAfterMaxAttemptsWithTheLastError) {
  std::string id = Submit(2, 1);
  for (int i = 0; i < 3; ++i) {
    auto t = Request("w");
    ASSERT_TRUE(t.has_value());
    ASSERT_EQ(t->index(), 0) << "the failed task is retried first";
    Report(*t, false);
    if (i < 2) {
      EXPECT_EQ(Status(id).state(), pb::MAPPING);
    }
  }
  pb::JobStatus st = Status(id);
  EXPECT_EQ(st.state(), pb::FAILED);
  EXPECT_THAT(st.error(), HasSubstr("map task 0 (input /in/file-0) failed 3 times"));
  EXPECT_THAT(st.error(), HasSubstr("boom"));
  EXPECT_FALSE(Request("w").has_value()) << "a failed job hands out no more tasks";
}

TEST_F(SchedulerTest, TimeoutsCountTowardsMaxAttempts) {
  std::string id = Submit(1, 1);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(Request(absl::StrCat("w", i)).has_value());
    Advance(absl::Seconds(11));
  }
  pb::JobStatus st = Status(id);
  EXPECT_EQ(st.state(), pb::FAILED);
  EXPECT_THAT(st.error(), HasSubstr("went silent"));
}

TEST_F(SchedulerTest, JobsMaxAttemptsOverridesTheDefault) {
  pb::JobSpec spec = Spec(1, 1);
  spec.set_max_attempts(1);
  std::string id = s_.Submit(spec, now_).value();
  Report(*Request("w"), false);
  EXPECT_EQ(Status(id).state(), pb::FAILED);
}

class BackupSchedulerTest : public SchedulerTest {
 protected:
  BackupSchedulerTest() : SchedulerTest(BackupOptions()) {}
};

TEST_F(BackupSchedulerTest, StragglerGetsOneBackupOnAnotherWorker) {
  std::string id = Submit(10, 1);
  std::vector<pb::Task> maps;
  for (int i = 0; i < 10; ++i) maps.push_back(*Request(absl::StrCat("w", i)));
  now_ += absl::Seconds(1);
  for (int i = 0; i < 9; ++i) Report(maps[i], true);
  // One task left, running 1 s: below backup_min_runtime (5 s).
  Advance(absl::Seconds(3));
  ASSERT_TRUE(Beat(maps[9], "w9"));
  EXPECT_FALSE(Request("w0").has_value());
  Advance(absl::Seconds(2));
  ASSERT_TRUE(Beat(maps[9], "w9"));
  // The straggler's own worker never gets a copy of its task.
  EXPECT_FALSE(Request("w9").has_value());
  auto backup = Request("w0");
  ASSERT_TRUE(backup.has_value());
  EXPECT_EQ(backup->index(), 9);
  EXPECT_EQ(Status(id).backup_attempts(), 1);
  // One copy only.
  EXPECT_FALSE(Request("w1").has_value());
  // The backup wins; the original is told to stop; the phase moves on.
  Report(*backup, true, "w0");
  EXPECT_FALSE(Beat(maps[9], "w9"));
  EXPECT_EQ(Status(id).state(), pb::REDUCING);
  EXPECT_EQ(Status(id).failed_attempts(), 0);
}

TEST_F(BackupSchedulerTest, BackupWaitsForTwiceTheMedianTaskTime) {
  Submit(5, 1);
  std::vector<pb::Task> maps;
  for (int i = 0; i < 5; ++i) maps.push_back(*Request(absl::StrCat("w", i)));
  for (int i = 0; i < 10; ++i) {
    Advance(absl::Seconds(1));
    for (int m = 0; m < 5; ++m) Beat(maps[m], absl::StrCat("w", m));
  }
  // Tasks take 10 s: the backup threshold becomes 2 x 10 s.
  for (int i = 0; i < 4; ++i) Report(maps[i], true);
  for (int i = 0; i < 9; ++i) {
    Advance(absl::Seconds(1));
    Beat(maps[4], "w4");
  }
  EXPECT_FALSE(Request("w0").has_value()) << "19 s is within 2x the median";
  Advance(absl::Seconds(2));
  Beat(maps[4], "w4");
  EXPECT_TRUE(Request("w0").has_value());
}

TEST_F(SchedulerTest, NegativeFractionDisablesBackups) {
  Submit(1, 1);
  auto t = Request("w0");
  for (int i = 0; i < 60; ++i) {
    Advance(absl::Seconds(1));
    Beat(*t, "w0");
  }
  EXPECT_FALSE(Request("w1").has_value());
}

TEST_F(SchedulerTest, CancelStopsRunningAttemptsAndScheduling) {
  std::string id = Submit(2, 1);
  auto t = Request("w");
  auto cancelled = s_.Cancel(id, now_);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state(), pb::CANCELLED);
  EXPECT_FALSE(Beat(*t));
  EXPECT_FALSE(Request("w").has_value());
  Report(*t, true);
  EXPECT_EQ(Status(id).maps_done(), 0) << "a cancelled job must not change";
  EXPECT_EQ(s_.Cancel("job-99", now_).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, OlderJobsAreServedFirst) {
  std::string first = Submit(1, 1);
  std::string second = Submit(1, 1);
  EXPECT_EQ(Request("a")->job_id(), first);
  // The first job has nothing more to hand out until its map finishes: the
  // second job uses the idle worker meanwhile.
  EXPECT_EQ(Request("b")->job_id(), second);
}

TEST_F(SchedulerTest, StaleReportFromAnotherPhaseIsIgnored) {
  std::string id = Submit(1, 2);
  auto m = Request("w");
  Report(*m, true);
  auto r = Request("w");
  ASSERT_EQ(r->type(), pb::REDUCE);
  // A map attempt reporting a failure after its phase ended changes nothing.
  Report(*m, false);
  EXPECT_EQ(Status(id).failed_attempts(), 0);
  EXPECT_EQ(Status(id).state(), pb::REDUCING);
}

TEST_F(SchedulerTest, RestoreResumesFromTheLastPersistedRecords) {
  std::string id = Submit(3, 1);
  auto m0 = Request("w0");
  auto m1 = Request("w1");
  auto m2 = Request("w2");
  Report(*m0, true, "w0", {{"map.records_out", 5}});
  std::vector<pb::JobRecord> persisted = s_.TakeDirty();
  ASSERT_EQ(persisted.size(), 1u);

  // A new coordinator process: map 0 stays done; maps 1 and 2 were running,
  // their attempts are unknown now, so they are handed out again.
  Scheduler restored(Options());
  restored.Restore(persisted, s_.next_job_number());
  pb::JobStatus st = restored.Status(id).value();
  EXPECT_EQ(st.maps_done(), 1);
  EXPECT_EQ(st.counters().at("map.records_out"), 5);
  auto again = restored.RequestTask("w3", now_);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->index(), 1);
  // New attempt ids never reuse one handed out before the restart.
  EXPECT_GT(again->attempt_id(), m2->attempt_id());
  // The old process's attempt of map 2 is still alive: its heartbeat is
  // adopted instead of starting a needless copy.
  pb::HeartbeatRequest hb;
  hb.set_worker_id("w2");
  hb.set_job_id(id);
  hb.set_type(pb::MAP);
  hb.set_index(2);
  hb.set_attempt_id(m2->attempt_id());
  EXPECT_TRUE(restored.Heartbeat(hb, now_));
  EXPECT_FALSE(restored.RequestTask("w4", now_).has_value());
  // And the result of an attempt from before the restart is accepted.
  pb::ReportTaskRequest report;
  report.set_job_id(id);
  report.set_type(pb::MAP);
  report.set_index(1);
  report.set_attempt_id(m1->attempt_id());
  report.set_ok(true);
  report.set_output_location("/work/" + id);
  restored.ReportTask(report, now_);
  EXPECT_EQ(restored.Status(id)->maps_done(), 2);
  // Job numbers continue after the restored ones.
  EXPECT_EQ(restored.Submit(Spec(1, 1), now_).value(), "job-2");
}

TEST_F(SchedulerTest, RestoreKeepsFinishedJobsForStatus) {
  std::string id = Submit(1, 1);
  FinishPhase(id);
  FinishPhase(id);
  ASSERT_EQ(Status(id).state(), pb::SUCCEEDED);
  Scheduler restored(Options());
  restored.Restore(s_.TakeDirty(), s_.next_job_number());
  pb::JobStatus st = restored.Status(id).value();
  EXPECT_EQ(st.state(), pb::SUCCEEDED);
  EXPECT_EQ(st.attempts(), 2);
  EXPECT_FALSE(restored.RequestTask("w", now_).has_value());
  ASSERT_EQ(restored.List().size(), 1u);
}

// §3.3 of the paper: completed map tasks of a failed worker are re-executed
// because their output is on its local disk. Here a reducer's failed fetch
// tells the coordinator: every finished map whose output was on that worker
// runs again (no failed attempt counted), the job goes back to its map phase,
// and reduces are handed out again with the new addresses.
TEST_F(SchedulerTest, LostMapOutputsAreRunAgainAndReducesSeeTheNewAddress) {
  std::string id = Submit(3, 2);
  auto m0 = Request("a"), m1 = Request("b"), m2 = Request("a");
  ASSERT_TRUE(m0 && m1 && m2);
  Report(*m0, true, "a");
  Report(*m1, true, "b");
  Report(*m2, true, "a");
  auto r0 = Request("b");
  auto r1 = Request("b");
  ASSERT_TRUE(r0 && r1);
  ASSERT_EQ(r0->map_addresses_size(), 3);
  EXPECT_EQ(r0->map_addresses(0), "a:7000");
  EXPECT_EQ(r0->map_addresses(1), "b:7000");

  // r0 cannot fetch map 0 from a: maps 0 and 2 (both on a) run again.
  pb::ReportTaskRequest lost;
  lost.set_worker_id("b");
  lost.set_job_id(id);
  lost.set_type(pb::REDUCE);
  lost.set_index(0);
  lost.set_attempt_id(r0->attempt_id());
  lost.set_ok(false);
  lost.set_error("fetch failed");
  lost.add_lost_maps(0);
  lost.add_lost_map_addresses("a:7000");
  s_.ReportTask(lost, now_);
  pb::JobStatus st = Status(id);
  EXPECT_EQ(st.state(), pb::MAPPING);
  EXPECT_EQ(st.maps_done(), 1);
  EXPECT_EQ(st.lost_map_outputs(), 2);
  EXPECT_EQ(st.failed_attempts(), 0) << "a lost map output is not the reduce's failure";
  // The same news from r1 changes nothing more: map 0 is not done any more.
  lost.set_index(1);
  lost.set_attempt_id(r1->attempt_id());
  s_.ReportTask(lost, now_);
  EXPECT_EQ(Status(id).lost_map_outputs(), 2);

  auto again0 = Request("c");
  auto again2 = Request("c");
  ASSERT_TRUE(again0 && again2);
  EXPECT_EQ(again0->type(), pb::MAP);
  EXPECT_EQ(again0->index(), 0);
  EXPECT_EQ(again2->index(), 2);
  EXPECT_FALSE(Request("c").has_value()) << "no reduce before the lost maps are done again";
  Report(*again0, true, "c");
  Report(*again2, true, "c");
  EXPECT_EQ(Status(id).state(), pb::REDUCING);
  auto r = Request("b");
  ASSERT_TRUE(r && r->type() == pb::REDUCE);
  EXPECT_EQ(r->map_addresses(0), "c:7000");
  EXPECT_EQ(r->map_addresses(1), "b:7000");
  EXPECT_EQ(r->map_addresses(2), "c:7000");
  Report(*r, true, "b");
  auto last = Request("b");
  ASSERT_TRUE(last);
  Report(*last, true, "b");
  EXPECT_EQ(Status(id).state(), pb::SUCCEEDED);
}

// A reduce that fetched everything before a worker died still finishes, even
// while the lost maps are being run again: its result counts.
TEST_F(SchedulerTest, ReduceFinishingWhileLostMapsRerunStillCounts) {
  std::string id = Submit(2, 2);
  for (int i = 0; i < 2; ++i) Report(*Request("w"), true, "w");
  auto r0 = Request("x"), r1 = Request("y");
  ASSERT_TRUE(r0 && r1);
  pb::ReportTaskRequest lost;
  lost.set_worker_id("y");
  lost.set_job_id(id);
  lost.set_type(pb::REDUCE);
  lost.set_index(1);
  lost.set_attempt_id(r1->attempt_id());
  lost.set_ok(false);
  lost.add_lost_maps(1);
  lost.add_lost_map_addresses("w:7000");
  s_.ReportTask(lost, now_);
  ASSERT_EQ(Status(id).state(), pb::MAPPING);
  Report(*r0, true, "x");
  EXPECT_EQ(Status(id).reduces_done(), 1);
  FinishPhase(id);  // the maps again, then the remaining reduce
  EXPECT_EQ(Status(id).state(), pb::SUCCEEDED);
}

TEST_F(SchedulerTest, RegisteredWorkersExpireAndEndedJobsAreNamed) {
  pb::RegisterWorkerRequest reg;
  reg.set_worker_id("h:1");
  reg.set_address("127.0.0.1:9000");
  reg.add_apps("wc");
  s_.RegisterWorker(reg, now_);
  ASSERT_EQ(s_.Workers(now_).size(), 1u);
  EXPECT_EQ(s_.Workers(now_)[0].apps(0), "wc");
  EXPECT_TRUE(s_.Workers(now_ + absl::Seconds(16)).empty());

  std::string id = Submit(1, 1);
  EXPECT_TRUE(s_.RecentlyEnded(now_).empty());
  FinishPhase(id);
  FinishPhase(id);
  ASSERT_EQ(Status(id).state(), pb::SUCCEEDED);
  EXPECT_EQ(s_.RecentlyEnded(now_), std::vector<std::string>{id});
  EXPECT_TRUE(s_.RecentlyEnded(now_ + absl::Minutes(11)).empty());
}

}  // namespace
}  // namespace ds::mr
