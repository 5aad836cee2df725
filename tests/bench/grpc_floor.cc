// grpc_floor: what gRPC alone costs per operation, in CPU and latency, with no
// application work: an echo server and a client in two processes on loopback.
//
// An operation is one request message and one response message, as in our KV
// service: `--mode=stream` sends it over one bidirectional stream per
// connection (the shape of KvService.Batch, one request per message),
// `--mode=unary` as one unary call. `--conns` connections (one channel each,
// not shared: see MakeChannel), each with `--inflight` operations outstanding;
// a connection sends the next operation as soon as one completes.
//
// Roles:
//   --role=both (default): starts `--role=server` as a child PROCESS on a free
//     port (so CPU is accounted per process, as in a deployment), runs the
//     client here, prints one line, stops the server.
//   --role=server --listen=HOST:PORT: serves until SIGTERM or SIGINT.
//   --role=client --target=HOST:PORT [--server_pid=PID]: the load; reports the
//     server's CPU too when given its pid.
//
// The line: ops/s, CPU microseconds per operation of the server process and of
// the client process (user + system, over the measured window), p50/p99
// latency, and the CPU that other processes used meanwhile (noise). gRPC's
// environment variables (GRPC_POLL_STRATEGY, GRPC_EXPERIMENTS, ...) reach the
// server child unchanged, and --channel_args applies to both sides, for A/B
// runs of gRPC's knobs.
#include <sys/resource.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc_server.h"
#include "common/init.h"
#include "common/net.h"
#include "common/stats.h"
#include "common/subprocess.h"
#include "grpcpp/grpcpp.h"
#include "tests/bench/bench_echo.grpc.pb.h"

ABSL_FLAG(std::string, role, "both", "server | client | both (server in a child process).");
ABSL_FLAG(std::string, listen, "127.0.0.1:0", "--role=server: HOST:PORT to listen on.");
ABSL_FLAG(std::string, target, "", "--role=client: HOST:PORT of the server.");
ABSL_FLAG(int, server_pid, 0, "--role=client: pid of the server, to report its CPU (0: not).");
ABSL_FLAG(std::string, mode, "stream", "stream (one bidi stream per connection) | unary.");
ABSL_FLAG(int, conns, 64, "Connections (one channel each).");
ABSL_FLAG(int, inflight, 1, "Operations outstanding per connection.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(5), "Measured run time.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1), "Run time before measuring starts.");
ABSL_FLAG(int, payload, 256, "Payload bytes per message (each way).");
ABSL_FLAG(
    bool, server_health, true,
    "Server: register gRPC's default health service (a synchronous service, so the "
    "server also runs sync-server poller threads), as our daemons do (common/grpc_server.cc).");
ABSL_FLAG(std::string, channel_args, "",
          "Extra channel arguments for client channels and the server: "
          "NAME=VALUE[,NAME=VALUE...]; an integer VALUE is set as an int, else as a string.");

namespace {

namespace pb = ds::bench::pb;

// What the client does. Flags map onto it in main().
struct LoadOptions {
  std::string target;                          // HOST:PORT of the echo server
  bool stream = true;                          // one bidi stream per connection; false: unary calls
  int conns = 64;                              // connections, one channel each
  int inflight = 1;                            // operations outstanding per connection
  int payload_bytes = 256;                     // per message, each way
  absl::Duration warmup = absl::Seconds(1);    // before the measured window
  absl::Duration duration = absl::Seconds(5);  // the measured window
  pid_t server_pid = 0;                        // 0: server CPU not reported
  std::vector<std::pair<std::string, std::string>> channel_args;
};

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ---- CPU accounting ----

// User + system CPU of this process (all threads), in microseconds.
int64_t SelfCpuMicros() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1'000'000LL + ru.ru_utime.tv_usec +
         ru.ru_stime.tv_usec;
}

// Context switches (voluntary + involuntary) of this process's threads: each
// voluntary one is a thread that blocked and later had to be woken.
int64_t SelfContextSwitches() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_nvcsw + ru.ru_nivcsw;
}

// Context switches of the live threads of process `pid`, from
// /proc/PID/task/*/status. Threads that exit during the window are missed, so
// the difference of two samples is a lower bound. -1 if unreadable.
int64_t ProcessContextSwitches(pid_t pid) {
  std::error_code ec;
  int64_t total = 0;
  for (const auto& task :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/task"), ec)) {
    std::ifstream in(task.path() / "status");
    std::string line;
    while (std::getline(in, line)) {
      for (absl::string_view key : {"voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"}) {
        if (absl::StartsWith(line, key)) {
          int64_t n = 0;
          if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(key.size())), &n)) {
            total += n;
          }
        }
      }
    }
  }
  return ec ? -1 : total;
}

// User + system CPU of process `pid` (all threads), in microseconds, from
// /proc/PID/stat; resolution one clock tick (10 ms), which is 0.2% of a 5 s
// window at one core. -1 if unreadable.
int64_t ProcessCpuMicros(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  if (!std::getline(in, line)) return -1;
  // Fields after the command name, which is in parentheses and may hold spaces.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(line.substr(close + 2));
  std::string f;
  int64_t utime = 0, stime = 0;
  // Field 3 (state) is the first here; utime and stime are fields 14 and 15.
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14 && !absl::SimpleAtoi(f, &utime)) return -1;
    if (i == 15 && !absl::SimpleAtoi(f, &stime)) return -1;
  }
  return (utime + stime) * 1'000'000LL / sysconf(_SC_CLK_TCK);
}

// CPU time all processes on the machine were busy (not idle or iowait), in
// microseconds summed over cores, from /proc/stat.
int64_t MachineBusyMicros() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  int64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  if (!(in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal)) {
    return -1;
  }
  return (user + nice + system + irq + softirq + steal) * 1'000'000LL / sysconf(_SC_CLK_TCK);
}

struct CpuSample {
  int64_t client_us = 0;
  int64_t server_us = -1;
  int64_t client_switches = 0;
  int64_t server_switches = -1;
  int64_t machine_us = 0;
  int64_t wall_ns = 0;
};

CpuSample SampleCpu(pid_t server_pid) {
  CpuSample s;
  s.wall_ns = NowNanos();
  s.client_us = SelfCpuMicros();
  s.client_switches = SelfContextSwitches();
  if (server_pid != 0) {
    s.server_us = ProcessCpuMicros(server_pid);
    s.server_switches = ProcessContextSwitches(server_pid);
  }
  s.machine_us = MachineBusyMicros();
  return s;
}

// ---- Server ----

// Echoes each message of a stream, in order. Reads run ahead of writes (a
// client may have many messages in flight); messages read while a write is in
// flight wait in `queue_`. Finishes once the client has closed its side (or
// the call broke) and no write is in flight.
class EchoStreamReactor final : public grpc::ServerBidiReactor<pb::EchoMessage, pb::EchoMessage> {
 public:
  EchoStreamReactor() { StartRead(&in_); }

  void OnReadDone(bool ok) override {
    bool write = false;
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {
        reads_done_ = true;
        finish = !writing_ && !finished_;
        finished_ = finished_ || finish;
      } else if (writing_) {
        queue_.push_back(std::move(in_));
      } else {
        writing_ = true;
        out_ = std::move(in_);
        write = true;
      }
    }
    if (finish) {
      Finish(grpc::Status::OK);
      return;
    }
    if (!ok) return;
    in_.Clear();
    if (write) StartWrite(&out_);
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    bool write = false;
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      if (ok && !queue_.empty()) {
        out_ = std::move(queue_.front());
        queue_.pop_front();
        write = true;
      } else {
        // A failed write means the call broke: the pending read fails too and
        // finishes the call unless it already failed.
        queue_.clear();
        writing_ = false;
        finish = reads_done_ && !finished_;
        finished_ = finished_ || finish;
      }
    }
    if (write) StartWrite(&out_);
    if (finish) Finish(grpc::Status::OK);
  }

  void OnDone() override { delete this; }

 private:
  pb::EchoMessage in_;   // the read in flight
  pb::EchoMessage out_;  // the write in flight; touched only by who set writing_
  absl::Mutex mu_;
  std::deque<pb::EchoMessage> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

class EchoServiceImpl final : public pb::EchoService::CallbackService {
 public:
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* ctx, const pb::EchoMessage* request,
                                 pb::EchoMessage* response) override {
    response->set_payload(request->payload());
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerBidiReactor<pb::EchoMessage, pb::EchoMessage>* EchoStream(
      grpc::CallbackServerContext*) override {
    return new EchoStreamReactor();
  }
};

int RunServer(const std::string& listen, bool health,
              const std::vector<std::pair<std::string, std::string>>& channel_args) {
  // Before any thread exists, so that every gRPC thread inherits the mask.
  ds::common::BlockShutdownSignals();
  grpc::EnableDefaultHealthCheckService(health);
  EchoServiceImpl service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  // As common/grpc_server.cc sets it for our daemons.
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.SetMaxSendMessageSize(64 << 20);
  for (const auto& [name, value] : channel_args) {
    int v = 0;
    if (absl::SimpleAtoi(value, &v)) {
      builder.AddChannelArgument(name, v);
    } else {
      builder.AddChannelArgument(name, value);
    }
  }
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "grpc_floor server: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  std::fprintf(stderr, "grpc_floor server: listening on port %d\n", port);
  ds::common::WaitForShutdownSignal();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  return 0;
}

// ---- Client ----

// Per-connection (stream) or per-slot (unary) results.
struct Recorder {
  std::vector<int64_t> latencies_ns;  // completions inside the measured window
  int64_t errors = 0;
};

struct RunState {
  std::atomic<bool> measuring{false};
  std::atomic<bool> stopping{false};
};

// One connection's stream: `inflight` messages outstanding, the next one sent
// as each answer arrives. The server answers in order, so answers match the
// send times in `sent_ns_` front to back. Writes are started only before
// StartCall and from reactions, so no hold is needed; the stream ends by
// cancellation (TryCancel) at the end of the run.
class StreamConnection final : public grpc::ClientBidiReactor<pb::EchoMessage, pb::EchoMessage> {
 public:
  StreamConnection(pb::EchoService::Stub* stub, const pb::EchoMessage& request, int inflight,
                   RunState* run, absl::BlockingCounter* done)
      : stub_(stub), request_(request), inflight_(inflight), run_(run), done_(done) {
    recorder_.latencies_ns.reserve(4096);
  }

  void Start() {
    stub_->async()->EchoStream(&ctx_, this);
    const int64_t now = NowNanos();
    {
      absl::MutexLock lock(&mu_);
      for (int i = 0; i < inflight_; ++i) sent_ns_.push_back(now);
      writing_ = true;
      queued_writes_ = inflight_ - 1;
    }
    StartRead(&in_);
    StartWrite(&request_);
    StartCall();
  }

  void Cancel() { ctx_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      if (!run_->stopping.load(std::memory_order_relaxed)) {
        absl::MutexLock lock(&mu_);
        ++recorder_.errors;
      }
      return;  // OnDone follows
    }
    const int64_t now = NowNanos();
    const bool measuring = run_->measuring.load(std::memory_order_relaxed);
    const bool send = !run_->stopping.load(std::memory_order_relaxed);
    bool write = false;
    {
      absl::MutexLock lock(&mu_);
      if (!sent_ns_.empty()) {
        if (measuring) recorder_.latencies_ns.push_back(now - sent_ns_.front());
        sent_ns_.pop_front();
      }
      if (send) {
        sent_ns_.push_back(now);
        if (writing_) {
          ++queued_writes_;
        } else {
          writing_ = true;
          write = true;
        }
      }
    }
    if (write) StartWrite(&request_);
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    bool write = false;
    {
      absl::MutexLock lock(&mu_);
      if (ok && queued_writes_ > 0) {
        --queued_writes_;
        write = true;
      } else {
        writing_ = false;
      }
    }
    // The same message each time: gRPC serializes it when the write starts.
    if (write) StartWrite(&request_);
  }

  void OnDone(const grpc::Status&) override { done_->DecrementCount(); }

  Recorder TakeRecorder() {
    absl::MutexLock lock(&mu_);
    return std::move(recorder_);
  }

 private:
  pb::EchoService::Stub* const stub_;
  const pb::EchoMessage request_;
  const int inflight_;
  RunState* const run_;
  absl::BlockingCounter* const done_;
  grpc::ClientContext ctx_;
  pb::EchoMessage in_;
  absl::Mutex mu_;
  std::deque<int64_t> sent_ns_ ABSL_GUARDED_BY(mu_);  // send time of each answer due
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  int queued_writes_ ABSL_GUARDED_BY(mu_) = 0;
  Recorder recorder_ ABSL_GUARDED_BY(mu_);
};

// One outstanding unary call at a time, the next started from the previous
// one's completion.
class UnaryCaller {
 public:
  UnaryCaller(pb::EchoService::Stub* stub, const pb::EchoMessage& request, RunState* run,
              absl::BlockingCounter* done)
      : stub_(stub), request_(request), run_(run), done_(done) {
    recorder_.latencies_ns.reserve(4096);
  }

  void Issue() {
    // The finished call's context is kept until the next completion, so it
    // is never destroyed inside its own completion callback.
    previous_ctx_ = std::move(ctx_);
    ctx_ = std::make_unique<grpc::ClientContext>();
    sent_ns_ = NowNanos();
    stub_->async()->Echo(ctx_.get(), &request_, &response_,
                         [this](grpc::Status status) { OnDone(status); });
  }

  Recorder TakeRecorder() { return std::move(recorder_); }

 private:
  void OnDone(const grpc::Status& status) {
    const int64_t now = NowNanos();
    if (!status.ok()) {
      ++recorder_.errors;
      done_->DecrementCount();  // this slot stops: no retry loop on a broken server
      return;
    }
    if (run_->measuring.load(std::memory_order_relaxed)) {
      recorder_.latencies_ns.push_back(now - sent_ns_);
    }
    if (run_->stopping.load(std::memory_order_relaxed)) {
      done_->DecrementCount();  // last use of this object in this callback
      return;
    }
    Issue();
  }

  pb::EchoService::Stub* const stub_;
  const pb::EchoMessage request_;
  RunState* const run_;
  absl::BlockingCounter* const done_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientContext> previous_ctx_;
  pb::EchoMessage response_;
  int64_t sent_ns_ = 0;
  Recorder recorder_;
};

// A channel with its own TCP connection: gRPC shares one connection among
// channels with equal arguments, so each gets a distinct "ds.connection_id",
// as client/clerk.cc's MakeKvChannel does for KvPool.
std::shared_ptr<grpc::Channel> MakeChannel(const LoadOptions& options, int connection_id) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  args.SetInt("ds.connection_id", connection_id);
  for (const auto& [name, value] : options.channel_args) {
    int v = 0;
    if (absl::SimpleAtoi(value, &v)) {
      args.SetInt(name, v);
    } else {
      args.SetString(name, value);
    }
  }
  return grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(), args);
}

std::string GrpcEnvSummary() {
  std::vector<std::string> parts;
  for (const char* name : {"GRPC_POLL_STRATEGY", "GRPC_EXPERIMENTS", "GRPC_ENABLE_FORK_SUPPORT"}) {
    if (const char* v = std::getenv(name)) parts.push_back(absl::StrCat(name, "=", v));
  }
  return parts.empty() ? "-" : absl::StrJoin(parts, ",");
}

int RunClient(const LoadOptions& options) {
  pb::EchoMessage request;
  request.set_payload(std::string(options.payload_bytes, 'x'));
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<pb::EchoService::Stub>> stubs;
  for (int c = 0; c < options.conns; ++c) {
    channels.push_back(MakeChannel(options, c));
    stubs.push_back(pb::EchoService::NewStub(channels.back()));
  }
  // Connect first: connection set-up is not what we measure.
  for (auto& ch : channels) {
    if (!ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      std::fprintf(stderr, "grpc_floor: cannot connect to %s\n", options.target.c_str());
      return 1;
    }
  }

  RunState run;
  const int slots = options.stream ? options.conns : options.conns * options.inflight;
  absl::BlockingCounter done(slots);
  std::vector<std::unique_ptr<StreamConnection>> streams;
  std::vector<std::unique_ptr<UnaryCaller>> callers;
  if (options.stream) {
    for (int c = 0; c < options.conns; ++c) {
      streams.push_back(std::make_unique<StreamConnection>(stubs[c].get(), request,
                                                           options.inflight, &run, &done));
    }
    for (auto& s : streams) s->Start();
  } else {
    for (int c = 0; c < options.conns; ++c) {
      for (int i = 0; i < options.inflight; ++i) {
        callers.push_back(std::make_unique<UnaryCaller>(stubs[c].get(), request, &run, &done));
      }
    }
    for (auto& u : callers) u->Issue();
  }

  absl::SleepFor(options.warmup);
  run.measuring.store(true);
  const CpuSample before = SampleCpu(options.server_pid);
  absl::SleepFor(options.duration);
  const CpuSample after = SampleCpu(options.server_pid);
  run.measuring.store(false);
  run.stopping.store(true);
  for (auto& s : streams) s->Cancel();
  done.Wait();

  std::vector<int64_t> latencies;
  int64_t errors = 0;
  auto collect = [&](Recorder r) {
    latencies.insert(latencies.end(), r.latencies_ns.begin(), r.latencies_ns.end());
    errors += r.errors;
  };
  for (auto& s : streams) collect(s->TakeRecorder());
  for (auto& u : callers) collect(u->TakeRecorder());
  std::sort(latencies.begin(), latencies.end());

  const double wall_s = static_cast<double>(after.wall_ns - before.wall_ns) / 1e9;
  const double ops = static_cast<double>(latencies.size());
  const double client_us = static_cast<double>(after.client_us - before.client_us);
  const bool have_server = before.server_us >= 0 && after.server_us >= 0;
  const double server_us =
      have_server ? static_cast<double>(after.server_us - before.server_us) : 0.0;
  const double machine_us = static_cast<double>(after.machine_us - before.machine_us);
  const double other_pct = (machine_us - client_us - server_us) / (wall_s * 1e6) * 100.0;
  const double client_switches =
      static_cast<double>(after.client_switches - before.client_switches);
  const double server_switches =
      before.server_switches >= 0 && after.server_switches >= 0
          ? static_cast<double>(after.server_switches - before.server_switches)
          : -1.0;
  auto per_op = [&](double us) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.1f", ops > 0 ? us / ops : 0.0);
    return std::string(buf);
  };
  const std::string args = options.channel_args.empty()
                               ? "-"
                               : absl::StrJoin(options.channel_args, ",", absl::PairFormatter("="));
  std::printf(
      "mode=%s conns=%d inflight=%d payload=%d ops_s=%.0f server_us_op=%s client_us_op=%s "
      "total_us_op=%s p50_us=%.0f p99_us=%.0f server_cs_op=%.2f client_cs_op=%.2f "
      "other_cpu_pct=%.0f errors=%lld args=%s env=%s\n",
      options.stream ? "stream" : "unary", options.conns, options.inflight, options.payload_bytes,
      ops / wall_s, have_server ? per_op(server_us).c_str() : "n/a", per_op(client_us).c_str(),
      have_server ? per_op(server_us + client_us).c_str() : "n/a",
      static_cast<double>(ds::common::Percentile(latencies, 0.50)) / 1e3,
      static_cast<double>(ds::common::Percentile(latencies, 0.99)) / 1e3,
      ops > 0 && server_switches >= 0 ? server_switches / ops : -1.0,
      ops > 0 ? client_switches / ops : 0.0, other_pct, static_cast<long long>(errors),
      args.c_str(), GrpcEnvSummary().c_str());
  std::fflush(stdout);
  return errors == 0 ? 0 : 1;
}

std::string SelfExecutable() {
  std::vector<char> buf(4096);
  const ssize_t n = readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  return n > 0 ? std::string(buf.data(), static_cast<size_t>(n)) : std::string();
}

// --role=both: the server in a child process on a free port, the client here.
int RunBoth(LoadOptions options) {
  absl::StatusOr<ds::common::PortReservation> port = ds::common::ReserveFreePort();
  if (!port.ok()) {
    std::fprintf(stderr, "grpc_floor: %s\n", port.status().ToString().c_str());
    return 1;
  }
  ds::common::SubprocessOptions child;
  child.argv = {
      SelfExecutable(),
      "--role=server",
      absl::StrCat("--listen=", port->address()),
      absl::StrCat("--channel_args=", absl::GetFlag(FLAGS_channel_args)),
      absl::StrCat("--server_health=", absl::GetFlag(FLAGS_server_health) ? "true" : "false"),
      "--log_level=warn"};
  absl::StatusOr<std::unique_ptr<ds::common::Subprocess>> server =
      ds::common::Subprocess::Start(std::move(child));
  if (!server.ok()) {
    std::fprintf(stderr, "grpc_floor: %s\n", server.status().ToString().c_str());
    return 1;
  }
  // Serving once an Echo call succeeds (the health service may be off).
  {
    auto stub = pb::EchoService::NewStub(
        grpc::CreateChannel(port->address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_wait_for_ready(true);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    pb::EchoMessage request, response;
    if (grpc::Status s = stub->Echo(&ctx, request, &response); !s.ok()) {
      std::fprintf(stderr, "grpc_floor: server not serving: %s\n", s.error_message().c_str());
      return 1;
    }
  }
  options.target = port->address();
  options.server_pid = (*server)->pid();
  const int rc = RunClient(options);
  (*server)->Terminate(absl::Seconds(3));
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  ds::common::InitProcess(argc, argv,
                          "grpc_floor: gRPC's own CPU per operation (one request and one response "
                          "message, no application work) and latency, echo client and server in "
                          "separate processes on loopback.");
  const std::string role = absl::GetFlag(FLAGS_role);
  std::vector<std::pair<std::string, std::string>> channel_args;
  for (absl::string_view kv :
       absl::StrSplit(absl::GetFlag(FLAGS_channel_args), ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty() || p.second.empty()) {
      std::fprintf(stderr, "--channel_args: expected NAME=VALUE, got '%s'\n",
                   std::string(kv).c_str());
      return 2;
    }
    channel_args.push_back(std::move(p));
  }
  if (role == "server") {
    return RunServer(absl::GetFlag(FLAGS_listen), absl::GetFlag(FLAGS_server_health), channel_args);
  }

  LoadOptions options;
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "stream" && mode != "unary") {
    std::fprintf(stderr, "--mode must be stream or unary\n");
    return 2;
  }
  options.stream = mode == "stream";
  options.conns = absl::GetFlag(FLAGS_conns);
  options.inflight = absl::GetFlag(FLAGS_inflight);
  options.payload_bytes = absl::GetFlag(FLAGS_payload);
  options.warmup = absl::GetFlag(FLAGS_warmup);
  options.duration = absl::GetFlag(FLAGS_duration);
  options.channel_args = std::move(channel_args);
  if (options.conns < 1 || options.inflight < 1 || options.payload_bytes < 0) {
    std::fprintf(stderr, "--conns and --inflight must be >= 1, --payload >= 0\n");
    return 2;
  }
  if (role == "both") return RunBoth(std::move(options));
  if (role == "client") {
    options.target = absl::GetFlag(FLAGS_target);
    options.server_pid = absl::GetFlag(FLAGS_server_pid);
    if (options.target.empty()) {
      std::fprintf(stderr, "--role=client needs --target\n");
      return 2;
    }
    return RunClient(options);
  }
  std::fprintf(stderr, "--role must be server, client or both\n");
  return 2;
}
