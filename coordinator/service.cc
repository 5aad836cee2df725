#include "coordinator/service.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace ds::mr {

CoordinatorService::CoordinatorService(CoordinatorOptions options, std::unique_ptr<JobStore> store,
                                       std::shared_ptr<spdlog::logger> log)
    : options_(options),
      store_(std::move(store)),
      log_(std::move(log)),
      scheduler_(options.scheduler) {}

absl::StatusOr<std::unique_ptr<CoordinatorService>> CoordinatorService::Create(
    CoordinatorOptions options, std::unique_ptr<JobStore> store,
    std::shared_ptr<spdlog::logger> log) {
  auto contents = store->Load();
  if (!contents.ok()) return contents.status();
  std::unique_ptr<CoordinatorService> service(
      new CoordinatorService(options, std::move(store), std::move(log)));
  {
    absl::MutexLock lock(&service->mu_);
    service->scheduler_.Restore(contents->records, contents->next_job_number);
    service->log_->info("restored {} job(s); next job number {}", contents->records.size(),
                        service->scheduler_.next_job_number());
    // A job that ended just before a crash may still have intermediate files.
    service->NoteEndedLocked(contents->records, /*seq=*/0);
  }
  service->CleanUp();
  service->ticker_ = std::thread([s = service.get()] { s->TickLoop(); });
  return service;
}

CoordinatorService::~CoordinatorService() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (ticker_.joinable()) ticker_.join();
}

void CoordinatorService::WriteMetrics(common::ScrapeWriter& w) {
  SchedulerCounts c;
  {
    absl::MutexLock lock(&mu_);
    c = scheduler_.Counts();
  }
  w.Gauge("dstack_mr_jobs", "MapReduce jobs the coordinator knows, by state");
  for (pb::JobState state :
       {pb::QUEUED, pb::MAPPING, pb::REDUCING, pb::SUCCEEDED, pb::FAILED, pb::CANCELLED}) {
    std::string name = pb::JobState_Name(state);
    for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    auto it = c.jobs.find(state);
    w.Sample(it == c.jobs.end() ? 0 : static_cast<double>(it->second), {{"state", name}});
  }
  w.Gauge("dstack_mr_tasks",
          "Tasks of the jobs not yet ended, by type and state (idle: waiting for a worker or "
          "for the map phase; running: at least one attempt out; done)");
  for (const auto& [type, t] : {std::pair{"map", c.maps}, std::pair{"reduce", c.reduces}}) {
    w.Sample(static_cast<double>(t.idle), {{"type", type}, {"state", "idle"}});
    w.Sample(static_cast<double>(t.running), {{"type", type}, {"state", "running"}});
    w.Sample(static_cast<double>(t.done), {{"type", type}, {"state", "done"}});
  }
  w.Gauge("dstack_mr_running_attempts", "Task attempts handed to workers and not yet over");
  w.Sample(static_cast<double>(c.running_attempts));
  w.Counter("dstack_mr_task_attempts_total",
            "Task attempts started, over every job known (kind=all), of which failed (reported "
            "errors and timeouts) and backup copies of stragglers");
  w.Sample(static_cast<double>(c.attempts), {{"kind", "all"}});
  w.Sample(static_cast<double>(c.failed_attempts), {{"kind", "failed"}});
  w.Sample(static_cast<double>(c.backup_attempts), {{"kind", "backup"}});
}

uint64_t CoordinatorService::StageLocked() {
  std::vector<pb::JobRecord> dirty = scheduler_.TakeDirty();
  if (dirty.empty()) return durable_seq_ > staged_seq_ ? durable_seq_ : staged_seq_;
  ++staged_seq_;
  NoteEndedLocked(dirty, staged_seq_);
  for (pb::JobRecord& r : dirty) pending_[r.status().job_id()] = std::move(r);
  return staged_seq_;
}

absl::Status CoordinatorService::WaitDurable(uint64_t seq) {
  absl::MutexLock lock(&mu_);
  while (durable_seq_ < seq && store_error_.ok()) {
    if (writing_) {
      // Another thread is writing; its batch or the next one covers us.
      mu_.Await(absl::Condition(
          +[](CoordinatorService* s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return !s->writing_; },
          this));
      continue;
    }
    writing_ = true;
    std::vector<pb::JobRecord> batch;
    for (auto& [id, r] : pending_) batch.push_back(std::move(r));
    pending_.clear();
    uint64_t batch_seq = staged_seq_;
    uint64_t next_job = scheduler_.next_job_number();
    mu_.Unlock();
    absl::Status st = store_->Write(batch, next_job);
    mu_.Lock();
    writing_ = false;
    if (!st.ok()) {
      log_->critical("{}", st.ToString());
      store_error_ = st;
    } else {
      durable_seq_ = batch_seq;
    }
  }
  return store_error_;
}

void CoordinatorService::TickLoop() {
  while (true) {
    uint64_t seq;
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.tick_interval)) return;
      scheduler_.Tick(absl::Now());
      seq = StageLocked();
    }
    if (WaitDurable(seq).ok()) CleanUp();
  }
}

void CoordinatorService::NoteEndedLocked(const std::vector<pb::JobRecord>& records, uint64_t seq) {
  for (const pb::JobRecord& record : records) {
    const pb::JobStatus& status = record.status();
    pb::JobState state = status.state();
    if (state != pb::SUCCEEDED && state != pb::FAILED && state != pb::CANCELLED) continue;
    // Intermediate files live on the workers, which delete a job's when told
    // it ended (RequestTaskResponse.ended_jobs); the output directory is
    // shared, so its leftovers are removed here.
    // Reduce attempts killed mid-write leave their temporary files.
    garbage_.push_back({seq, "", status.spec().output_dir()});
  }
}

void CoordinatorService::CleanUp() {
  std::vector<Garbage> ready;
  {
    absl::MutexLock lock(&mu_);
    // Only jobs whose end is on disk: were the coordinator to crash before,
    // the job would resume and its reduces would still need these files.
    auto durable = std::stable_partition(garbage_.begin(), garbage_.end(),
                                         [&](const Garbage& g) { return g.seq > durable_seq_; });
    ready.assign(std::make_move_iterator(durable), std::make_move_iterator(garbage_.end()));
    garbage_.erase(durable, garbage_.end());
  }
  namespace fs = std::filesystem;
  for (const Garbage& g : ready) {
    std::error_code ec;
    if (!g.intermediate_dir.empty()) {
      fs::remove_all(g.intermediate_dir, ec);
      // The default work root (<output>/.mr-intermediate) goes too once no job
      // uses it, so the output directory holds only the output.
      fs::path parent = fs::path(g.intermediate_dir).parent_path();
      if (parent.filename() == ".mr-intermediate") fs::remove(parent, ec);
    }
    if (!g.output_dir.empty()) {
      for (fs::directory_iterator it(g.output_dir, ec), end; !ec && it != end; it.increment(ec)) {
        std::string name = it->path().filename().string();
        if (name.rfind("tmp-reduce-", 0) == 0) fs::remove(it->path(), ec);
      }
    }
  }
}

grpc::Status CoordinatorService::Submit(grpc::ServerContext*, const pb::SubmitRequest* request,
                                        pb::SubmitResponse* response) {
  uint64_t seq;
  {
    absl::MutexLock lock(&mu_);
    auto id = scheduler_.Submit(request->spec(), absl::Now());
    if (!id.ok()) return common::ToGrpcStatus(id.status());
    response->set_job_id(*id);
    seq = StageLocked();
    log_->info("{} submitted: {} map task(s), {} reduce(s)", *id, MapTaskCount(request->spec()),
               request->spec().reduces());
  }
  return common::ToGrpcStatus(WaitDurable(seq));
}

grpc::Status CoordinatorService::Status(grpc::ServerContext*, const pb::StatusRequest* request,
                                        pb::StatusResponse* response) {
  absl::MutexLock lock(&mu_);
  auto status = scheduler_.Status(request->job_id());
  if (!status.ok()) return common::ToGrpcStatus(status.status());
  *response->mutable_job() = *status;
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::List(grpc::ServerContext*, const pb::ListRequest*,
                                      pb::ListResponse* response) {
  absl::MutexLock lock(&mu_);
  for (pb::JobStatus& s : scheduler_.List()) *response->add_jobs() = std::move(s);
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Cancel(grpc::ServerContext*, const pb::CancelRequest* request,
                                        pb::CancelResponse* response) {
  uint64_t seq;
  {
    absl::MutexLock lock(&mu_);
    auto status = scheduler_.Cancel(request->job_id(), absl::Now());
    if (!status.ok()) return common::ToGrpcStatus(status.status());
    *response->mutable_job() = *status;
    seq = StageLocked();
  }
  absl::Status st = WaitDurable(seq);
  if (st.ok()) CleanUp();
  return common::ToGrpcStatus(st);
}

grpc::Status CoordinatorService::RequestTask(grpc::ServerContext*,
                                             const pb::RequestTaskRequest* request,
                                             pb::RequestTaskResponse* response) {
  uint64_t seq;
  {
    absl::MutexLock lock(&mu_);
    auto task = scheduler_.RequestTask(request->worker_id(), absl::Now());
    for (std::string& id : scheduler_.RecentlyEnded(absl::Now())) {
      response->add_ended_jobs(std::move(id));
    }
    if (!task) {
      response->set_retry_after_ms(absl::ToInt64Milliseconds(scheduler_.options().idle_retry));
      return grpc::Status::OK;
    }
    log_->debug("{} {} {} attempt {} -> {}", task->job_id(),
                task->type() == pb::MAP ? "map" : "reduce", task->index(), task->attempt_id(),
                request->worker_id());
    *response->mutable_task() = std::move(*task);
    seq = StageLocked();
  }
  // The attempt counter must be durable before the attempt id is used (see
  // Scheduler::Restore).
  return common::ToGrpcStatus(WaitDurable(seq));
}

grpc::Status CoordinatorService::RegisterWorker(grpc::ServerContext*,
                                                const pb::RegisterWorkerRequest* request,
                                                pb::RegisterWorkerResponse*) {
  if (request->worker_id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no worker id");
  }
  absl::MutexLock lock(&mu_);
  scheduler_.RegisterWorker(*request, absl::Now());
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::ListWorkers(grpc::ServerContext*, const pb::ListWorkersRequest*,
                                             pb::ListWorkersResponse* response) {
  absl::MutexLock lock(&mu_);
  for (pb::WorkerInfo& w : scheduler_.Workers(absl::Now())) *response->add_workers() = std::move(w);
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Heartbeat(grpc::ServerContext*,
                                           const pb::HeartbeatRequest* request,
                                           pb::HeartbeatResponse* response) {
  absl::MutexLock lock(&mu_);
  response->set_keep_going(scheduler_.Heartbeat(*request, absl::Now()));
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::ReportTask(grpc::ServerContext*,
                                            const pb::ReportTaskRequest* request,
                                            pb::ReportTaskResponse*) {
  uint64_t seq;
  {
    absl::MutexLock lock(&mu_);
    bool was_terminal = scheduler_.IsTerminal(request->job_id());
    scheduler_.ReportTask(*request, absl::Now());
    if (!request->ok() && request->lost_maps_size() > 0) {
      log_->warn(
          "{} reduce {} attempt {} on {} could not fetch the output of {} map(s) (first: "
          "map {} from {}): running them again",
          request->job_id(), request->index(), request->attempt_id(), request->worker_id(),
          request->lost_maps_size(), request->lost_maps(0),
          request->lost_map_addresses_size() > 0 ? request->lost_map_addresses(0) : "");
    } else if (!request->ok()) {
      log_->warn("{} {} {} attempt {} on {} failed: {}", request->job_id(),
                 request->type() == pb::MAP ? "map" : "reduce", request->index(),
                 request->attempt_id(), request->worker_id(), request->error());
    }
    if (!was_terminal && scheduler_.IsTerminal(request->job_id())) {
      auto status = scheduler_.Status(request->job_id());
      log_->info("{} finished: {} {}", request->job_id(), pb::JobState_Name(status->state()),
                 status->error());
    }
    seq = StageLocked();
  }
  // Intermediate files are only needed until every reduce has read them; they
  // are removed only once the job's end is durable (a restart before that
  // would re-run reduces that need them).
  absl::Status st = WaitDurable(seq);
  if (st.ok()) CleanUp();
  return common::ToGrpcStatus(st);
}

}  // namespace ds::mr
