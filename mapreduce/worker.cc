#include "mapreduce/worker.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/metrics.h"
#include "grpcpp/grpcpp.h"
#include "mapreduce/task.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace ds::mr {

Worker::Worker(WorkerOptions options, std::shared_ptr<spdlog::logger> log)
    : options_(std::move(options)),
      log_(std::move(log)),
      map_output_service_(options_.work_dir),
      fetcher_(FetcherOptions{.credentials = options_.credentials}) {
  // A coordinator that was down (or not yet up) is retried within a second
  // of coming back, not after gRPC's default backoff (up to two minutes,
  // longer than the worker's --coordinator-grace).
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  auto channel = grpc::CreateCustomChannel(
      options_.coordinator,
      options_.credentials != nullptr ? options_.credentials : grpc::InsecureChannelCredentials(),
      args);
  stub_ = pb::WorkerService::NewStub(channel);
  if (options_.metrics != nullptr) {
    prometheus::Registry& r = *options_.metrics;
    auto& tasks = prometheus::BuildCounter()
                      .Name("dstack_mr_worker_tasks_total")
                      .Help("Tasks this worker ran to the end, by type and outcome")
                      .Register(r);
    auto& seconds = prometheus::BuildHistogram()
                        .Name("dstack_mr_worker_task_duration_seconds")
                        .Help("Time to run one task (user code and files; not the report)")
                        .Register(r);
    const prometheus::Histogram::BucketBoundaries buckets = {0.01, 0.05, 0.1, 0.5, 1,   2.5,
                                                             5,    10,   30,  60,  300, 1800};
    for (auto [type, m] :
         {std::pair{"map", &map_metrics_}, std::pair{"reduce", &reduce_metrics_}}) {
      m->succeeded = &tasks.Add({{"type", type}, {"outcome", "succeeded"}});
      m->failed = &tasks.Add({{"type", type}, {"outcome", "failed"}});
      m->seconds = &seconds.Add({{"type", type}}, buckets);
    }
    running_ = &prometheus::BuildGauge()
                    .Name("dstack_mr_worker_running_tasks")
                    .Help("Tasks this worker is running now")
                    .Register(r)
                    .Add({});
  }
  absl::MutexLock lock(&mu_);
  last_contact_ = absl::Now();
}

Worker::~Worker() {
  if (server_ != nullptr) server_->Shutdown(absl::ZeroDuration());
}

absl::Status Worker::Start() {
  if (options_.work_dir.empty()) return absl::InvalidArgumentError("no work dir");
  std::error_code ec;
  std::filesystem::create_directories(options_.work_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("work dir ", options_.work_dir, ": ", ec.message()));
  }
  server_ = std::make_unique<common::GrpcServer>(common::GrpcServerOptions{
      .listen_address = options_.listen, .credentials = options_.server_credentials});
  server_->AddService(&map_output_service_);
  if (absl::Status st = server_->Start(); !st.ok()) return st;
  address_ = options_.advertise_address;
  if (address_.empty()) {
    address_ = server_->address();
  } else if (absl::EndsWith(address_, ":0")) {
    // A host to advertise, with the port picked at bind time.
    address_ = absl::StrCat(address_.substr(0, address_.size() - 1), server_->port());
  }
  return absl::OkStatus();
}

void Worker::RegisterLoop() {
  pb::RegisterWorkerRequest request;
  request.set_worker_id(options_.worker_id);
  request.set_address(address_);
  for (std::string& app : BundledApps(options_.app_dir)) request.add_apps(std::move(app));
  do {
    pb::RegisterWorkerResponse response;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    ctx.set_wait_for_ready(true);
    grpc::Status st = stub_->RegisterWorker(&ctx, request, &response);
    if (!st.ok()) log_->debug("register: {}", st.error_message());
  } while (!SleepOrStop(options_.register_interval));
}

void Worker::ForgetEndedJobs(const pb::RequestTaskResponse& response) {
  for (const std::string& job : response.ended_jobs()) {
    {
      absl::MutexLock lock(&mu_);
      if (!forgotten_jobs_.insert(job).second) continue;
    }
    // Job ids never contain '/' (the coordinator makes them); be careful anyway.
    if (job.empty() || job.find('/') != std::string::npos || job[0] == '.') continue;
    std::error_code ec;
    std::filesystem::remove_all(JobWorkDir(options_.work_dir, job), ec);
  }
}

void Worker::RequestStop() {
  absl::MutexLock lock(&mu_);
  if (!stop_) stop_reason_ = "shutdown requested";
  stop_ = true;
}

bool Worker::Stopping() {
  absl::MutexLock lock(&mu_);
  return stop_;
}

bool Worker::SleepOrStop(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&stop_), d);
}

void Worker::NoteContact(bool ok) {
  absl::MutexLock lock(&mu_);
  absl::Time now = absl::Now();
  if (ok) {
    last_contact_ = now;
  } else if (now - last_contact_ > options_.coordinator_grace && !stop_) {
    stop_ = true;
    stop_reason_ = absl::StrCat("coordinator unreachable for more than ",
                                absl::FormatDuration(options_.coordinator_grace));
  }
}

std::string Worker::Run() {
  std::vector<std::thread> slots;
  std::thread registrar([this] { RegisterLoop(); });
  for (int i = 0; i < std::max(1, options_.parallel); ++i) {
    slots.emplace_back([this, i] { Slot(i); });
  }
  for (auto& t : slots) t.join();
  RequestStop();  // ends the registrar when the coordinator went away
  registrar.join();
  // Map output is served until the slots are done: a reducer elsewhere may
  // still be fetching what this worker's last map produced.
  if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
  absl::MutexLock lock(&mu_);
  return stop_reason_;
}

void Worker::Slot(int slot) {
  std::string worker_id = absl::StrCat(options_.worker_id, "/", slot);
  while (!Stopping()) {
    pb::RequestTaskRequest request;
    request.set_worker_id(worker_id);
    pb::RequestTaskResponse response;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    ctx.set_wait_for_ready(true);
    grpc::Status st = stub_->RequestTask(&ctx, request, &response);
    NoteContact(st.ok());
    if (!st.ok()) {
      log_->debug("request task: {}", st.error_message());
      SleepOrStop(absl::Milliseconds(200));
      continue;
    }
    ForgetEndedJobs(response);
    if (!response.has_task()) {
      SleepOrStop(absl::Milliseconds(std::max<int64_t>(10, response.retry_after_ms())));
      continue;
    }
    Execute(response.task(), slot);
  }
}

void Worker::Execute(const pb::Task& task, int slot) {
  const char* kind = task.type() == pb::MAP ? "map" : "reduce";
  log_->info("{} {} {} (attempt {}) on slot {}", task.job_id(), kind, task.index(),
             task.attempt_id(), slot);
  std::string worker_id = absl::StrCat(options_.worker_id, "/", slot);

  // Heart-beat while user code runs: it may take long or hang; the coordinator
  // can only tell the two apart by our silence.
  absl::Mutex hb_mu;
  bool done = false;
  std::thread heartbeat([&] {
    absl::Duration interval =
        absl::Milliseconds(std::max<int64_t>(50, task.heartbeat_interval_ms()));
    while (true) {
      {
        absl::MutexLock lock(&hb_mu);
        if (hb_mu.AwaitWithTimeout(absl::Condition(&done), interval)) return;
      }
      pb::HeartbeatRequest request;
      request.set_worker_id(worker_id);
      request.set_job_id(task.job_id());
      request.set_type(task.type());
      request.set_index(task.index());
      request.set_attempt_id(task.attempt_id());
      pb::HeartbeatResponse response;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      NoteContact(stub_->Heartbeat(&ctx, request, &response).ok());
    }
  });

  RunnerSpec spec{task.spec().app(), task.spec().mapper(), task.spec().reducer(),
                  task.spec().combiner(), options_.app_dir};
  spec.temp_dir = JobWorkDir(options_.work_dir, task.job_id());
  absl::StatusOr<TaskResult> result;
  std::vector<LostMap> lost;
  {
    std::error_code ec;
    std::filesystem::create_directories(spec.temp_dir, ec);
  }
  TaskOptions task_options;
  task_options.work_dir = options_.work_dir;
  task_options.memory_budget_bytes = options_.sort_memory_bytes;
  task_options.self_address = address_;
  task_options.fetch = [this](const std::string& address,
                              const pb::FetchPartitionRequest& request) {
    return fetcher_.Fetch(address, request);
  };
  const auto start = std::chrono::steady_clock::now();
  if (running_ != nullptr) running_->Increment();
  auto runner = MakeRunner(spec);
  if (!runner.ok()) {
    result = runner.status();
  } else if (task.type() == pb::MAP) {
    result = RunMapTask(task, **runner, task_options);
  } else {
    result = RunReduceTask(task, **runner, task_options, &lost);
  }
  if (running_ != nullptr) {
    running_->Decrement();
    const TaskMetrics& m = task.type() == pb::MAP ? map_metrics_ : reduce_metrics_;
    (result.ok() ? m.succeeded : m.failed)->Increment();
    m.seconds->Observe(common::SecondsSince(start));
  }
  {
    absl::MutexLock lock(&hb_mu);
    done = true;
  }
  heartbeat.join();

  pb::ReportTaskRequest report;
  report.set_worker_id(worker_id);
  report.set_job_id(task.job_id());
  report.set_type(task.type());
  report.set_index(task.index());
  report.set_attempt_id(task.attempt_id());
  report.set_ok(result.ok());
  if (result.ok()) {
    report.set_output_location(result->output_location);
    if (task.type() == pb::MAP) report.set_output_address(address_);
    for (const auto& [name, value] : result->counters) (*report.mutable_counters())[name] = value;
  } else {
    report.set_error(std::string(result.status().message()));
    for (const LostMap& l : lost) {
      report.add_lost_maps(l.index);
      report.add_lost_map_addresses(l.address);
    }
    log_->warn("{} {} {} failed: {}", task.job_id(), kind, task.index(),
               result.status().ToString());
  }
  // Retry the report while the coordinator is briefly away (e.g. restarting);
  // a lost report only costs a re-execution after the task timeout.
  while (true) {
    pb::ReportTaskResponse response;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::Status st = stub_->ReportTask(&ctx, report, &response);
    NoteContact(st.ok());
    if (st.ok() || Stopping()) return;
    SleepOrStop(absl::Milliseconds(200));
  }
}

}  // namespace ds::mr
