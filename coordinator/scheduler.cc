#include "coordinator/scheduler.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ds::mr {
namespace {

bool IsTerminalState(pb::JobState state) {
  return state == pb::SUCCEEDED || state == pb::FAILED || state == pb::CANCELLED;
}

int64_t UnixMs(absl::Time t) { return absl::ToUnixMillis(t); }

const char* TypeName(pb::TaskType type) { return type == pb::MAP ? "map" : "reduce"; }

}  // namespace

uint64_t JobNumber(const std::string& job_id) {
  uint64_t n = 0;
  if (job_id.rfind("job-", 0) != 0) return 0;
  if (!absl::SimpleAtoi(absl::string_view(job_id.data() + 4, job_id.size() - 4), &n)) return 0;
  return n;
}

int MapTaskCount(const pb::JobSpec& spec) {
  return spec.splits_size() > 0 ? spec.splits_size() : spec.inputs_size();
}

std::string MapInputName(const pb::JobSpec& spec, int index) {
  if (spec.splits_size() > 0) {
    const pb::InputSplit& s = spec.splits(index);
    return absl::StrCat(s.path(), " bytes ", s.offset(), "-", s.offset() + s.length() - 1);
  }
  return spec.inputs(index);
}

void Scheduler::Restore(const std::vector<pb::JobRecord>& records, uint64_t next_job_number) {
  jobs_.clear();
  attempts_.clear();
  dirty_.clear();
  next_job_number_ = next_job_number;
  uint64_t issued = 0;
  for (const pb::JobRecord& record : records) {
    uint64_t n = JobNumber(record.status().job_id());
    if (n == 0) continue;
    jobs_[n].record = record;
    next_job_number_ = std::max(next_job_number_, n + 1);
    issued += record.status().attempts();
  }
  // Every issued attempt id was counted in a record persisted before the task
  // was handed out, so ids above the total never collide with a live one.
  next_attempt_id_ = issued + 1;
}

absl::StatusOr<std::string> Scheduler::Submit(pb::JobSpec spec, absl::Time now) {
  bool streaming = !spec.mapper().empty() || !spec.reducer().empty();
  if (streaming && (spec.mapper().empty() || spec.reducer().empty())) {
    return absl::InvalidArgumentError("streaming mode needs both a mapper and a reducer");
  }
  if (streaming == !spec.app().empty()) {
    return absl::InvalidArgumentError("give either an app or a mapper and reducer");
  }
  if (spec.inputs().empty() && spec.splits().empty()) {
    return absl::InvalidArgumentError("no input files");
  }
  for (const pb::InputSplit& split : spec.splits()) {
    if (split.path().empty() || split.offset() < 0 || split.length() <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad input split ", split.ShortDebugString()));
    }
  }
  if (spec.reduces() < 1) return absl::InvalidArgumentError("reduces must be at least 1");
  if (spec.output_dir().empty()) return absl::InvalidArgumentError("no output directory");
  if (spec.max_attempts() < 0) return absl::InvalidArgumentError("max_attempts must be >= 0");
  if (!spec.combiner().empty() && !streaming) {
    return absl::InvalidArgumentError(
        "a combiner command is for streaming jobs (a plugin brings its own Combine)");
  }

  uint64_t n = next_job_number_++;
  std::string id = absl::StrCat("job-", n);
  Job& job = jobs_[n];
  pb::JobStatus* status = job.record.mutable_status();
  status->set_job_id(id);
  status->set_state(pb::QUEUED);
  status->set_maps_total(MapTaskCount(spec));
  status->set_reduces_total(spec.reduces());
  status->set_submit_unix_ms(UnixMs(now));
  for (int i = 0; i < MapTaskCount(spec); ++i) {
    pb::TaskRecord* t = job.record.add_maps();
    t->set_type(pb::MAP);
    t->set_index(i);
  }
  for (int i = 0; i < spec.reduces(); ++i) {
    pb::TaskRecord* t = job.record.add_reduces();
    t->set_type(pb::REDUCE);
    t->set_index(i);
  }
  *status->mutable_spec() = std::move(spec);
  MarkDirty(id);
  return id;
}

absl::StatusOr<pb::JobStatus> Scheduler::Cancel(const std::string& job_id, absl::Time now) {
  auto it = jobs_.find(JobNumber(job_id));
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job ", job_id));
  Job& job = it->second;
  if (!IsTerminalState(job.record.status().state())) {
    FinishJob(job, pb::CANCELLED, "cancelled by user", now);
  }
  return job.record.status();
}

int Scheduler::MaxAttempts(const Job& job) const {
  int per_job = job.record.status().spec().max_attempts();
  return per_job > 0 ? per_job : options_.max_attempts;
}

pb::TaskRecord* Scheduler::FindTask(Job& job, pb::TaskType type, int index) {
  auto* tasks = type == pb::MAP ? job.record.mutable_maps() : job.record.mutable_reduces();
  if (index < 0 || index >= tasks->size()) return nullptr;
  return tasks->Mutable(index);
}

int Scheduler::RunningCount(const std::string& job_id, pb::TaskType type, int index) const {
  int n = 0;
  for (const auto& [id, a] : attempts_) {
    if (a.job_id == job_id && a.type == type && a.index == index) ++n;
  }
  return n;
}

std::optional<pb::Task> Scheduler::RequestTask(const std::string& worker_id, absl::Time now) {
  for (auto& [n, job] : jobs_) {
    if (IsTerminalState(job.record.status().state())) continue;
    if (auto task = AssignFrom(job, worker_id, now)) return task;
  }
  return std::nullopt;
}

std::optional<pb::Task> Scheduler::AssignFrom(Job& job, const std::string& worker_id,
                                              absl::Time now) {
  const std::string& job_id = job.record.status().job_id();
  bool mapping = job.record.status().state() != pb::REDUCING;
  pb::TaskType type = mapping ? pb::MAP : pb::REDUCE;
  auto& tasks = mapping ? job.record.maps() : job.record.reduces();
  int unfinished = 0;
  for (const pb::TaskRecord& t : tasks) {
    if (t.done()) continue;
    ++unfinished;
    if (RunningCount(job_id, type, t.index()) == 0) {
      return MakeTask(job, type, t.index(), worker_id, /*backup=*/false, now);
    }
  }
  // Every unfinished task is running. Near the end of the phase, give the
  // stragglers a second copy: one slow machine should not hold the whole job.
  if (options_.backup_remaining_fraction < 0 || unfinished == 0) return std::nullopt;
  int limit = std::max(1, static_cast<int>(options_.backup_remaining_fraction * tasks.size()));
  if (unfinished > limit) return std::nullopt;
  absl::Duration threshold = options_.backup_min_runtime;
  if (!job.finished_durations.empty()) {
    std::vector<absl::Duration> d = job.finished_durations;
    std::nth_element(d.begin(), d.begin() + d.size() / 2, d.end());
    threshold = std::max(threshold, d[d.size() / 2] * options_.backup_slowdown);
  }
  for (const pb::TaskRecord& t : tasks) {
    if (t.done()) continue;
    const Attempt* only = nullptr;
    int running = 0;
    for (const auto& [id, a] : attempts_) {
      if (a.job_id == job_id && a.type == type && a.index == t.index()) {
        only = &a;
        ++running;
      }
    }
    if (running == 1 && only->worker_id != worker_id && now - only->started > threshold) {
      return MakeTask(job, type, t.index(), worker_id, /*backup=*/true, now);
    }
  }
  return std::nullopt;
}

pb::Task Scheduler::MakeTask(Job& job, pb::TaskType type, int index, const std::string& worker_id,
                             bool backup, absl::Time now) {
  pb::JobStatus* status = job.record.mutable_status();
  if (status->state() == pb::QUEUED) {
    status->set_state(pb::MAPPING);
    status->set_start_unix_ms(UnixMs(now));
  }
  status->set_attempts(status->attempts() + 1);
  if (backup) status->set_backup_attempts(status->backup_attempts() + 1);
  uint64_t attempt_id = next_attempt_id_++;
  attempts_[attempt_id] = Attempt{status->job_id(), type, index, worker_id, now, now, backup};

  pb::Task task;
  task.set_job_id(status->job_id());
  task.set_type(type);
  task.set_index(index);
  task.set_attempt_id(attempt_id);
  *task.mutable_spec() = status->spec();
  task.set_maps_total(status->maps_total());
  task.set_heartbeat_interval_ms(absl::ToInt64Milliseconds(options_.heartbeat_interval));
  if (type == pb::REDUCE) {
    for (const pb::TaskRecord& m : job.record.maps()) {
      task.add_map_locations(m.output_location());
      task.add_map_addresses(m.output_address());
    }
  }
  MarkDirty(status->job_id());
  return task;
}

bool Scheduler::Heartbeat(const pb::HeartbeatRequest& request, absl::Time now) {
  auto job_it = jobs_.find(JobNumber(request.job_id()));
  if (job_it == jobs_.end()) return false;
  Job& job = job_it->second;
  if (IsTerminalState(job.record.status().state())) return false;
  pb::TaskRecord* task = FindTask(job, request.type(), request.index());
  if (task == nullptr || task->done()) return false;
  auto it = attempts_.find(request.attempt_id());
  if (it != attempts_.end() && it->second.job_id == request.job_id() &&
      it->second.type == request.type() && it->second.index == request.index()) {
    it->second.last_heartbeat = now;
    return true;
  }
  if (it != attempts_.end()) return false;  // the id belongs to another task: stale
  // An attempt started before a coordinator restart: adopt it so it is timed
  // out like any other instead of being duplicated needlessly.
  attempts_[request.attempt_id()] = Attempt{
      request.job_id(), request.type(), request.index(), request.worker_id(), now, now, false};
  return true;
}

void Scheduler::ReportTask(const pb::ReportTaskRequest& report, absl::Time now) {
  auto job_it = jobs_.find(JobNumber(report.job_id()));
  if (job_it == jobs_.end()) return;
  Job& job = job_it->second;
  std::optional<Attempt> attempt;
  auto it = attempts_.find(report.attempt_id());
  if (it != attempts_.end() && it->second.job_id == report.job_id() &&
      it->second.type == report.type() && it->second.index == report.index()) {
    attempt = it->second;
    attempts_.erase(it);
  }
  pb::JobStatus* status = job.record.mutable_status();
  if (IsTerminalState(status->state())) return;
  pb::TaskRecord* task = FindTask(job, report.type(), report.index());
  // A duplicate (backup or re-issued) attempt finishing second changes nothing:
  // outputs are renamed atomically and deterministic, so the first one stands.
  if (task == nullptr || task->done()) return;
  // A reduce may still be running (and finish, with every map's output) while
  // lost maps are re-run: its result counts in either phase. A map report in
  // the reduce phase cannot reach here (every map is done then).
  if (!report.ok()) {
    if (report.type() == pb::REDUCE && report.lost_maps_size() > 0) {
      // Not the reduce's fault: its maps' outputs are gone. No failure is
      // counted; the maps run again and the reduce is handed out once they
      // are done.
      for (int i = 0; i < report.lost_maps_size(); ++i) {
        std::string address =
            i < report.lost_map_addresses_size() ? report.lost_map_addresses(i) : "";
        LoseMapOutputs(job, report.lost_maps(i), address);
      }
      MarkDirty(status->job_id());
      return;
    }
    FailAttempt(job, report.type(), report.index(), report.error(), now);
    return;
  }
  task->set_done(true);
  task->set_output_location(report.output_location());
  task->set_output_address(report.output_address());
  for (const auto& [name, value] : report.counters()) {
    (*status->mutable_counters())[name] += value;
  }
  if (attempt) job.finished_durations.push_back(now - attempt->started);
  // Other copies of this task are now pointless; their heartbeats get "stop".
  for (auto a = attempts_.begin(); a != attempts_.end();) {
    if (a->second.job_id == report.job_id() && a->second.type == report.type() &&
        a->second.index == report.index()) {
      a = attempts_.erase(a);
    } else {
      ++a;
    }
  }
  MarkDirty(status->job_id());
  if (report.type() == pb::MAP) {
    status->set_maps_done(status->maps_done() + 1);
    if (status->maps_done() == status->maps_total()) {
      // Reduces start only after every map finished (each reads all of them).
      status->set_state(pb::REDUCING);
      job.finished_durations.clear();
    }
  } else {
    status->set_reduces_done(status->reduces_done() + 1);
    if (status->reduces_done() == status->reduces_total()) {
      FinishJob(job, pb::SUCCEEDED, "", now);
    }
  }
}

int Scheduler::LoseMapOutputs(Job& job, int index, const std::string& address) {
  pb::TaskRecord* lost = FindTask(job, pb::MAP, index);
  // Already re-run (or being re-run): the reducer's view was stale.
  if (lost == nullptr || !lost->done() || lost->output_address() != address) return 0;
  pb::JobStatus* status = job.record.mutable_status();
  int reset = 0;
  for (pb::TaskRecord& m : *job.record.mutable_maps()) {
    if (!m.done() || m.output_address() != address) continue;
    m.set_done(false);
    m.clear_output_location();
    m.clear_output_address();
    ++reset;
  }
  status->set_maps_done(status->maps_done() - reset);
  status->set_lost_map_outputs(status->lost_map_outputs() + reset);
  if (status->state() == pb::REDUCING) {
    status->set_state(pb::MAPPING);
    job.finished_durations.clear();
  }
  MarkDirty(status->job_id());
  return reset;
}

void Scheduler::FailAttempt(Job& job, pb::TaskType type, int index, const std::string& error,
                            absl::Time now) {
  pb::TaskRecord* task = FindTask(job, type, index);
  pb::JobStatus* status = job.record.mutable_status();
  task->set_failures(task->failures() + 1);
  task->set_last_error(error);
  status->set_failed_attempts(status->failed_attempts() + 1);
  MarkDirty(status->job_id());
  if (task->failures() >= MaxAttempts(job)) {
    std::string what = absl::StrCat(TypeName(type), " task ", index);
    if (type == pb::MAP) {
      absl::StrAppend(&what, " (input ", MapInputName(status->spec(), index), ")");
    }
    FinishJob(job, pb::FAILED,
              absl::StrCat(what, " failed ", task->failures(), " times; last error: ", error), now);
  }
}

void Scheduler::FinishJob(Job& job, pb::JobState state, const std::string& error, absl::Time now) {
  pb::JobStatus* status = job.record.mutable_status();
  status->set_state(state);
  status->set_error(error);
  status->set_finish_unix_ms(UnixMs(now));
  if (status->start_unix_ms() == 0) status->set_start_unix_ms(UnixMs(now));
  DropAttemptsOf(status->job_id());
  job.finished_durations.clear();
  MarkDirty(status->job_id());
}

void Scheduler::DropAttemptsOf(const std::string& job_id) {
  for (auto a = attempts_.begin(); a != attempts_.end();) {
    a = a->second.job_id == job_id ? attempts_.erase(a) : std::next(a);
  }
}

void Scheduler::Tick(absl::Time now) {
  std::vector<Attempt> expired;
  for (auto a = attempts_.begin(); a != attempts_.end();) {
    if (now - a->second.last_heartbeat > options_.task_timeout) {
      expired.push_back(a->second);
      a = attempts_.erase(a);
    } else {
      ++a;
    }
  }
  for (const Attempt& a : expired) {
    auto job_it = jobs_.find(JobNumber(a.job_id));
    if (job_it == jobs_.end()) continue;
    Job& job = job_it->second;
    if (IsTerminalState(job.record.status().state())) continue;
    pb::TaskRecord* task = FindTask(job, a.type, a.index);
    if (task == nullptr || task->done()) continue;
    FailAttempt(job, a.type, a.index,
                absl::StrCat("worker ", a.worker_id, " went silent for more than ",
                             absl::FormatDuration(options_.task_timeout),
                             " (crashed, hung or partitioned)"),
                now);
  }
}

absl::StatusOr<pb::JobStatus> Scheduler::Status(const std::string& job_id) const {
  auto it = jobs_.find(JobNumber(job_id));
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job ", job_id));
  return it->second.record.status();
}

std::vector<pb::JobStatus> Scheduler::List() const {
  std::vector<pb::JobStatus> out;
  for (const auto& [n, job] : jobs_) out.push_back(job.record.status());
  return out;
}

bool Scheduler::IsTerminal(const std::string& job_id) const {
  auto it = jobs_.find(JobNumber(job_id));
  return it != jobs_.end() && IsTerminalState(it->second.record.status().state());
}

SchedulerCounts Scheduler::Counts() const {
  SchedulerCounts c;
  c.running_attempts = static_cast<int64_t>(attempts_.size());
  std::set<std::tuple<uint64_t, pb::TaskType, int>> running;
  for (const auto& [id, a] : attempts_) running.insert({JobNumber(a.job_id), a.type, a.index});
  for (const auto& [n, job] : jobs_) {
    const pb::JobStatus& st = job.record.status();
    ++c.jobs[st.state()];
    c.attempts += st.attempts();
    c.failed_attempts += st.failed_attempts();
    c.backup_attempts += st.backup_attempts();
    if (IsTerminalState(st.state())) continue;
    auto count = [&](const pb::TaskRecord& t, SchedulerCounts::Tasks& out) {
      if (t.done()) {
        ++out.done;
      } else if (running.contains({n, t.type(), t.index()})) {
        ++out.running;
      } else {
        ++out.idle;
      }
    };
    for (const pb::TaskRecord& t : job.record.maps()) count(t, c.maps);
    for (const pb::TaskRecord& t : job.record.reduces()) count(t, c.reduces);
  }
  return c;
}

std::vector<std::string> Scheduler::MapLocations(const std::string& job_id) const {
  std::set<std::string> dirs;
  auto it = jobs_.find(JobNumber(job_id));
  if (it == jobs_.end()) return {};
  for (const pb::TaskRecord& m : it->second.record.maps()) {
    if (!m.output_location().empty()) dirs.insert(m.output_location());
  }
  return {dirs.begin(), dirs.end()};
}

std::vector<std::string> Scheduler::RecentlyEnded(absl::Time now) const {
  std::vector<std::string> out;
  const int64_t since = UnixMs(now - options_.ended_job_notice);
  for (const auto& [n, job] : jobs_) {
    const pb::JobStatus& st = job.record.status();
    if (IsTerminalState(st.state()) && st.finish_unix_ms() >= since) out.push_back(st.job_id());
  }
  return out;
}

void Scheduler::RegisterWorker(const pb::RegisterWorkerRequest& request, absl::Time now) {
  pb::WorkerInfo& w = workers_[request.worker_id()];
  w.set_worker_id(request.worker_id());
  w.set_address(request.address());
  *w.mutable_apps() = request.apps();
  w.set_last_seen_unix_ms(UnixMs(now));
  // Forget workers long gone, so the registry does not grow with restarts.
  for (auto it = workers_.begin(); it != workers_.end();) {
    bool expired =
        now - absl::FromUnixMillis(it->second.last_seen_unix_ms()) > options_.worker_expiry * 4;
    it = expired ? workers_.erase(it) : std::next(it);
  }
}

std::vector<pb::WorkerInfo> Scheduler::Workers(absl::Time now) const {
  std::vector<pb::WorkerInfo> out;
  for (const auto& [id, w] : workers_) {
    if (now - absl::FromUnixMillis(w.last_seen_unix_ms()) <= options_.worker_expiry) {
      out.push_back(w);
    }
  }
  return out;
}

std::vector<pb::JobRecord> Scheduler::TakeDirty() {
  std::vector<pb::JobRecord> out;
  for (const std::string& id : dirty_) {
    auto it = jobs_.find(JobNumber(id));
    if (it != jobs_.end()) out.push_back(it->second.record);
  }
  dirty_.clear();
  return out;
}

}  // namespace ds::mr
