// The MapReduce coordinator's brain: jobs, tasks, attempts, timeouts and backup
// tasks as a pure deterministic state machine. No threads, no clock, no I/O: the
// caller passes the current time into every call and persists the job records
// that a call reports as changed (the gRPC service in coordinator/service.h does
// both). Not thread-safe; the caller serializes calls.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/mapreduce.pb.h"

namespace ds::mr {

struct SchedulerOptions {
  // A running attempt whose worker has not heart-beaten for this long is
  // presumed dead and its task re-issued. Default: 10 s (6.824's rule).
  absl::Duration task_timeout = absl::Seconds(10);
  // Workers heart-beat this often. Must be well below task_timeout. Default: 1 s.
  absl::Duration heartbeat_interval = absl::Seconds(1);
  // Attempts per task that may fail (reported error or timeout) before the job
  // fails. A job may override it in its spec. Default: 4.
  int max_attempts = 4;
  // Backup tasks: once every task of a phase has been handed out and at most
  // max(1, backup_remaining_fraction * tasks) remain unfinished, a task running
  // longer than max(backup_min_runtime, backup_slowdown * median duration of the
  // phase's finished tasks) gets one backup copy; the first result wins.
  // Defaults: 0.2, 5 s, 2.0. A negative fraction disables backups.
  double backup_remaining_fraction = 0.2;
  absl::Duration backup_min_runtime = absl::Seconds(5);
  double backup_slowdown = 2.0;
  // How long an idle worker waits before asking again. Default: 50 ms.
  absl::Duration idle_retry = absl::Milliseconds(50);
  // A registered worker not heard from (RegisterWorker) for this long is no
  // longer listed. Workers re-register every few seconds. Default: 15 s.
  absl::Duration worker_expiry = absl::Seconds(15);
  // Jobs that ended within this long are named to workers asking for tasks,
  // which then delete their intermediate files. Default: 10 min.
  absl::Duration ended_job_notice = absl::Minutes(10);
};

// How many jobs and tasks are in each state (for the coordinator's metrics).
struct SchedulerCounts {
  // Every job the coordinator knows (ended ones included), by state.
  std::map<pb::JobState, int64_t> jobs;
  // Tasks of the jobs that have not ended: done, running (at least one
  // attempt out), idle (waiting for a worker, or for the map phase to end).
  struct Tasks {
    int64_t idle = 0;
    int64_t running = 0;
    int64_t done = 0;
  };
  Tasks maps;
  Tasks reduces;
  // Attempts out now (backups included).
  int64_t running_attempts = 0;
  // Summed over every job known: attempts started (backups included), failed
  // (reported errors and timeouts), backup copies.
  int64_t attempts = 0;
  int64_t failed_attempts = 0;
  int64_t backup_attempts = 0;
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options) : options_(options) {}

  // Rebuilds state from persisted records (after a coordinator restart). Tasks
  // that were running become idle again: their attempts died with the old
  // process or will report into the new one (reports for unknown attempts of an
  // unfinished task are still accepted, first result wins).
  void Restore(const std::vector<pb::JobRecord>& records, uint64_t next_job_number);

  // Validates and queues a job; returns its id ("job-N").
  absl::StatusOr<std::string> Submit(pb::JobSpec spec, absl::Time now);
  absl::StatusOr<pb::JobStatus> Cancel(const std::string& job_id, absl::Time now);

  // The next task for `worker_id`, or nullopt when there is nothing to do now
  // (the worker should ask again after options().idle_retry).
  std::optional<pb::Task> RequestTask(const std::string& worker_id, absl::Time now);
  // Records that the attempt is alive; false if it should stop (task done or
  // job over).
  bool Heartbeat(const pb::HeartbeatRequest& request, absl::Time now);
  void ReportTask(const pb::ReportTaskRequest& report, absl::Time now);
  // Expires attempts whose worker went silent. Call periodically.
  void Tick(absl::Time now);

  absl::StatusOr<pb::JobStatus> Status(const std::string& job_id) const;
  std::vector<pb::JobStatus> List() const;
  bool IsTerminal(const std::string& job_id) const;
  // The distinct intermediate directories of a job's finished map tasks.
  std::vector<std::string> MapLocations(const std::string& job_id) const;
  // Ids of jobs that ended within options().ended_job_notice of `now`.
  std::vector<std::string> RecentlyEnded(absl::Time now) const;

  // The worker registry (not persisted: workers re-register).
  void RegisterWorker(const pb::RegisterWorkerRequest& request, absl::Time now);
  std::vector<pb::WorkerInfo> Workers(absl::Time now) const;

  // Ids of jobs whose record changed since the last call, with their records,
  // and the job counter; the caller persists them before acknowledging.
  std::vector<pb::JobRecord> TakeDirty();
  uint64_t next_job_number() const { return next_job_number_; }
  const SchedulerOptions& options() const { return options_; }
  // Running attempts (for tests and the status page).
  size_t running_attempts() const { return attempts_.size(); }
  // Linear in the number of jobs and of the unfinished jobs' tasks.
  SchedulerCounts Counts() const;

 private:
  struct Attempt {
    std::string job_id;
    pb::TaskType type;
    int index;
    std::string worker_id;
    absl::Time started;
    absl::Time last_heartbeat;
    bool backup;
  };
  struct Job {
    pb::JobRecord record;
    // Durations of finished tasks of the current phase, for the backup rule.
    std::vector<absl::Duration> finished_durations;
  };

  pb::TaskRecord* FindTask(Job& job, pb::TaskType type, int index);
  std::optional<pb::Task> AssignFrom(Job& job, const std::string& worker_id, absl::Time now);
  pb::Task MakeTask(Job& job, pb::TaskType type, int index, const std::string& worker_id,
                    bool backup, absl::Time now);
  void FailAttempt(Job& job, pb::TaskType type, int index, const std::string& error,
                   absl::Time now);
  // A reducer could not fetch map `index`'s output from `address`: every
  // finished map of the job whose output is there is run again (the paper's
  // rule for a dead worker's completed maps). Returns how many were reset.
  int LoseMapOutputs(Job& job, int index, const std::string& address);
  void FinishJob(Job& job, pb::JobState state, const std::string& error, absl::Time now);
  void DropAttemptsOf(const std::string& job_id);
  int RunningCount(const std::string& job_id, pb::TaskType type, int index) const;
  int MaxAttempts(const Job& job) const;
  void MarkDirty(const std::string& job_id) { dirty_.insert(job_id); }

  SchedulerOptions options_;
  // Ordered by submission (ids compare by number via JobKey), so older jobs
  // are served first.
  std::map<uint64_t, Job> jobs_;
  std::map<uint64_t, Attempt> attempts_;
  std::set<std::string> dirty_;
  std::map<std::string, pb::WorkerInfo> workers_;
  uint64_t next_job_number_ = 1;
  uint64_t next_attempt_id_ = 1;
};

// "job-12" -> 12; 0 if malformed.
uint64_t JobNumber(const std::string& job_id);

// Map tasks of a job: one per split if the spec has splits, else one per input.
int MapTaskCount(const pb::JobSpec& spec);
// What map task `index` reads, for messages: "/in/a.txt" or
// "/in/a.txt bytes 0-67108863".
std::string MapInputName(const pb::JobSpec& spec, int index);

}  // namespace ds::mr
