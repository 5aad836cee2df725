// mrrun: submits a MapReduce job to mr-coordinator and follows it to the end;
// also shows, lists and cancels jobs.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/mrrun_format.h"
#include "common/init.h"
#include "common/tls.h"
#include "grpcpp/grpcpp.h"
#include "proto/mapreduce.grpc.pb.h"

ABSL_FLAG(std::string, coordinator, "",
          "HOST:PORT of mr-coordinator. Default: $MRRUN_COORDINATOR, else 127.0.0.1:7070.");
ABSL_FLAG(std::string, app, "",
          "The job's code: a bundled app name (wc, indexer, grep, ...) or the path of a "
          "plugin .so built against mapreduce/app.h. Or use --mapper and --reducer.");
ABSL_FLAG(std::string, mapper, "",
          "Streaming mode: shell command run once per input file with the file on stdin, "
          "writing key<TAB>value lines. Runs on the workers: use absolute paths.");
ABSL_FLAG(std::string, reducer, "",
          "Streaming mode: shell command run once per reduce task with its key<TAB>value "
          "lines, sorted by key, on stdin, writing key<TAB>value output lines.");
ABSL_FLAG(std::string, combiner, "",
          "Streaming mode, optional: shell command run on each map task's output (key<TAB>"
          "value lines sorted by key on stdin, key<TAB>value lines out) before it is written; "
          "it must not change the reducer's result (word count: sum the counts).");
ABSL_FLAG(bool, combine, true,
          "Run the app's combiner (a plugin's Combine, or --combiner) on the map side. "
          "--nocombine turns it off, e.g. to compare.");
ABSL_FLAG(std::vector<std::string>, input, {},
          "Input files, one map task each: --input A B C, --input=A --input=B, or plain "
          "arguments after the flags.");
ABSL_FLAG(int64_t, split_kb, 0,
          "Split input files larger than this many KiB (65536 = 64 MiB) into several map "
          "tasks, each getting whole lines (for apps that do not care which file a line "
          "came from, like wc; not indexer). 0: one map task per file.");
ABSL_FLAG(int, reduces, 10, "Number of reduce tasks R, i.e. of output files mr-out-0..R-1.");
ABSL_FLAG(std::string, output, "",
          "Directory for the output files (created by the workers; must be on a file system "
          "the workers share). Required to submit.");
ABSL_FLAG(int, max_attempts, 0,
          "Failed attempts per task before the job fails; 0 = the coordinator's "
          "--max-attempts.");
ABSL_FLAG(bool, detach, false, "Submit, print the job id and exit without waiting.");
ABSL_FLAG(absl::Duration, poll_interval, absl::Milliseconds(250),
          "How often the job's status is polled while waiting.");
ABSL_FLAG(absl::Duration, progress_interval, absl::Seconds(5),
          "When stderr is not a terminal, print a progress line this often (and on every "
          "change of phase). On a terminal the line is redrawn at every poll.");
ABSL_FLAG(absl::Duration, lost_contact_timeout, absl::Seconds(60),
          "While waiting, give up after the coordinator has been unreachable this long (it "
          "may be restarting: jobs survive restarts). The job itself is not cancelled.");
ABSL_FLAG(absl::Duration, rpc_timeout, absl::Seconds(5), "Deadline of each call.");

namespace {

namespace pb = ds::mr::pb;
using ds::mr::pb::JobService;
using ds::mr::pb::JobStatus;

constexpr char kUsageText[] = R"(mrrun: run MapReduce jobs on mr-coordinator.

Usage:
  mrrun --app=NAME|PATH.so --output=DIR [--reduces=R] --input FILE...
  mrrun --mapper=CMD --reducer=CMD [--combiner=CMD] --output=DIR [--reduces=R] --input FILE...
        submit a job and wait for it: a progress line on stderr, then where the
        output is on stdout. With --detach, print the job id and return at once.
  mrrun status [JOB]   state, progress, times, attempts and counters of JOB
                       (default: the most recent job)
  mrrun list           one line per job the coordinator knows
  mrrun workers        the workers registered now: id, map-output address, apps
  mrrun cancel JOB     stop scheduling JOB's tasks; it ends as cancelled
JOB is "job-N" or just N.

Exit status: 0 on success; 1 when the job failed or was cancelled, or the
coordinator could not be reached or refused the request (the reason goes to
stderr); 2 on invalid usage; 130 when interrupted (Ctrl-C) while waiting: the
job itself goes on.)";

enum ExitCode { kOk = 0, kFailed = 1, kUsage = 2 };

// What Ctrl-C prints while mrrun waits: the job goes on without us. Formatted
// beforehand, since a signal handler may only write(2) and _exit(2).
char interrupt_message[512] = "";

void OnInterrupt(int) {
  ssize_t ignored = write(STDERR_FILENO, interrupt_message, strlen(interrupt_message));
  (void)ignored;
  _exit(128 + SIGINT);
}

int Usage(const std::string& message) {
  std::cerr << "mrrun: " << message << " (see mrrun --help)\n";
  return kUsage;
}

// Pulls every "--input A B C" / "--input=A" out of argv: the values are files,
// and Abseil would take only the first one of a space-separated list.
std::vector<std::string> ExtractInputs(int argc, char** argv, std::vector<char*>* rest) {
  std::vector<std::string> inputs;
  rest->push_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      for (; i < argc; ++i) rest->push_back(argv[i]);
      break;
    }
    if (a == "--input" || a == "-input") {
      while (i + 1 < argc && argv[i + 1][0] != '-') inputs.emplace_back(argv[++i]);
      continue;
    }
    if (absl::StartsWith(a, "--input=") || absl::StartsWith(a, "-input=")) {
      inputs.push_back(a.substr(a.find('=') + 1));
      continue;
    }
    rest->push_back(argv[i]);
  }
  return inputs;
}

class Client {
 public:
  Client(const std::string& address, std::shared_ptr<grpc::ChannelCredentials> credentials)
      : address_(address), stub_(JobService::NewStub(grpc::CreateChannel(address, credentials))) {}

  // Runs one call with the --rpc_timeout deadline; on failure prints why.
  template <typename Req, typename Resp, typename Method>
  bool Call(Method method, const Req& request, Resp* response, bool quiet = false) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::GetFlag(FLAGS_rpc_timeout)));
    grpc::Status st = (stub_.get()->*method)(&ctx, request, response);
    if (!st.ok() && !quiet) {
      std::cerr << "mrrun: " << ErrorText(st) << "\n";
    }
    last_error_ = st.ok() ? "" : ErrorText(st);
    return st.ok();
  }
  const std::string& last_error() const { return last_error_; }

 private:
  std::string ErrorText(const grpc::Status& st) const {
    if (st.error_code() == grpc::StatusCode::UNAVAILABLE ||
        st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return absl::StrCat("coordinator ", address_, " unreachable: ", st.error_message());
    }
    return st.error_message();
  }

  std::string address_;
  std::unique_ptr<JobService::Stub> stub_;
  std::string last_error_;
};

std::string AbsolutePath(const std::string& path) {
  std::error_code ec;
  auto abs = std::filesystem::absolute(path, ec);
  // Not normalized: "a/link/../b" is not always "a/b", and apps such as the
  // indexer print the input names as given.
  return ec ? path : abs.string();
}

// Follows the job until it ends. Progress goes to stderr: redrawn in place on
// a terminal, one line every --progress_interval (and per phase) otherwise.
int Wait(Client& client, const std::string& job_id) {
  const bool tty = isatty(STDERR_FILENO) != 0;
  const absl::Duration poll = absl::GetFlag(FLAGS_poll_interval);
  absl::Time last_printed = absl::InfinitePast();
  absl::Time last_contact = absl::Now();
  ds::mr::pb::JobState last_state = ds::mr::pb::JOB_STATE_UNSPECIFIED;
  bool warned_contact = false;
  while (true) {
    ds::mr::pb::StatusRequest request;
    request.set_job_id(job_id);
    ds::mr::pb::StatusResponse response;
    absl::Time now = absl::Now();
    if (!client.Call(&JobService::Stub::Status, request, &response, /*quiet=*/true)) {
      if (now - last_contact > absl::GetFlag(FLAGS_lost_contact_timeout)) {
        if (tty) std::cerr << "\n";
        std::cerr << "mrrun: gave up waiting for " << job_id << ": " << client.last_error()
                  << "\nmrrun: the job was not cancelled; see `mrrun status " << job_id
                  << "` once the coordinator is back\n";
        return kFailed;
      }
      if (!warned_contact) {
        if (tty) std::cerr << "\n";
        std::cerr << "mrrun: " << client.last_error() << "; retrying\n";
        warned_contact = true;
      }
      absl::SleepFor(poll);
      continue;
    }
    last_contact = now;
    warned_contact = false;
    const JobStatus& job = response.job();
    bool done = ds::mr::IsTerminal(job.state());
    if (tty) {
      std::cerr << "\r\033[K" << ds::mr::ProgressLine(job, now) << (done ? "\n" : "") << std::flush;
    } else if (done || job.state() != last_state ||
               now - last_printed >= absl::GetFlag(FLAGS_progress_interval)) {
      std::cerr << ds::mr::ProgressLine(job, now) << "\n" << std::flush;
      last_printed = now;
    }
    last_state = job.state();
    if (done) {
      if (job.state() == ds::mr::pb::SUCCEEDED) {
        std::cout << job_id << " succeeded in " << ds::mr::FormatSeconds(ds::mr::Elapsed(job, now))
                  << "; output: " << job.spec().output_dir() << "/mr-out-0 .. mr-out-"
                  << job.spec().reduces() - 1 << "\n";
        return kOk;
      }
      std::cerr << "mrrun: " << job_id << " " << ds::mr::StateName(job.state()) << ": "
                << job.error() << "\n";
      return kFailed;
    }
    absl::SleepFor(poll);
  }
}

// A bundled app name must be one some registered worker has; caught here, a
// typo fails at once instead of after --max-attempts tries of the first map.
// With no worker registered yet (a job queued before the workers start),
// nothing can be checked and the job is submitted.
int CheckBundledApp(Client& client, const std::string& app) {
  ds::mr::pb::ListWorkersResponse workers;
  if (!client.Call(&JobService::Stub::ListWorkers, ds::mr::pb::ListWorkersRequest(), &workers)) {
    return kFailed;
  }
  std::set<std::string> known;
  for (const auto& w : workers.workers()) known.insert(w.apps().begin(), w.apps().end());
  if (workers.workers().empty() || known.contains(app)) return kOk;
  std::cerr << "mrrun: unknown app '" << app << "': none of the " << workers.workers_size()
            << " registered worker(s) has it; bundled apps: "
            << absl::StrJoin(known.begin(), known.end(), ", ")
            << " (or give the path of a plugin .so)\n";
  return kUsage;
}

int Submit(Client& client, std::vector<std::string> inputs) {
  ds::mr::pb::SubmitRequest request;
  ds::mr::pb::JobSpec& spec = *request.mutable_spec();
  spec.set_app(absl::GetFlag(FLAGS_app));
  spec.set_mapper(absl::GetFlag(FLAGS_mapper));
  spec.set_reducer(absl::GetFlag(FLAGS_reducer));
  bool streaming = !spec.mapper().empty() || !spec.reducer().empty();
  if (streaming && (spec.mapper().empty() || spec.reducer().empty())) {
    return Usage("streaming mode needs both --mapper and --reducer");
  }
  if (streaming == !spec.app().empty()) {
    return Usage("give either --app or --mapper and --reducer");
  }
  spec.set_combiner(absl::GetFlag(FLAGS_combiner));
  if (!spec.combiner().empty() && !streaming) {
    return Usage("--combiner is for streaming jobs (a plugin brings its own Combine)");
  }
  spec.set_combine_disabled(!absl::GetFlag(FLAGS_combine));
  if (inputs.empty()) return Usage("no input files");
  if (absl::GetFlag(FLAGS_output).empty()) return Usage("--output is required");
  if (absl::GetFlag(FLAGS_reduces) < 1) return Usage("--reduces must be at least 1");
  if (absl::GetFlag(FLAGS_max_attempts) < 0) return Usage("--max-attempts must be >= 0");
  if (absl::GetFlag(FLAGS_split_kb) < 0) return Usage("--split-kb must be >= 0");
  // Workers may run anywhere on the shared file system, with another working
  // directory: every path in the spec is absolute.
  for (std::string& input : inputs) {
    input = AbsolutePath(input);
    // Caught here, a typo costs the user nothing; the workers would fail the
    // job too, but only after --max-attempts tries of the map task.
    if (access(input.c_str(), R_OK) != 0) {
      std::cerr << "mrrun: input " << input << ": " << strerror(errno) << "\n";
      return kFailed;
    }
  }
  if (spec.app().find('/') != std::string::npos || absl::EndsWith(spec.app(), ".so")) {
    spec.set_app(AbsolutePath(spec.app()));
  }
  for (const std::string& input : inputs) *spec.add_inputs() = input;
  if (int64_t split = absl::GetFlag(FLAGS_split_kb) << 10; split > 0) {
    for (const std::string& input : inputs) {
      std::error_code ec;
      int64_t size = static_cast<int64_t>(std::filesystem::file_size(input, ec));
      if (ec) {
        std::cerr << "mrrun: input " << input << ": " << ec.message() << "\n";
        return kFailed;
      }
      for (int64_t offset = 0; offset < size; offset += split) {
        pb::InputSplit* s = spec.add_splits();
        s->set_path(input);
        s->set_offset(offset);
        s->set_length(std::min(split, size - offset));
      }
    }
  }
  spec.set_reduces(absl::GetFlag(FLAGS_reduces));
  spec.set_output_dir(AbsolutePath(absl::GetFlag(FLAGS_output)));
  spec.set_max_attempts(absl::GetFlag(FLAGS_max_attempts));

  if (!spec.app().empty() && !absl::StrContains(spec.app(), "/")) {
    if (int code = CheckBundledApp(client, spec.app()); code != kOk) return code;
  }

  ds::mr::pb::SubmitResponse response;
  if (!client.Call(&JobService::Stub::Submit, request, &response)) return kFailed;
  const std::string& job_id = response.job_id();
  if (absl::GetFlag(FLAGS_detach)) {
    std::cout << job_id << "\n";
    return kOk;
  }
  snprintf(interrupt_message, sizeof(interrupt_message),
           "\nmrrun: stopped waiting; %s goes on (mrrun status %s, mrrun cancel %s)\n",
           job_id.c_str(), job_id.c_str(), job_id.c_str());
  signal(SIGINT, OnInterrupt);
  std::cerr << "submitted " << job_id << ": "
            << (spec.splits_size() > 0 ? spec.splits_size() : spec.inputs_size())
            << " map task(s), " << spec.reduces() << " reduce task(s)\n";
  return Wait(client, job_id);
}

int Status(Client& client, const std::vector<std::string>& args) {
  if (args.size() > 1) return Usage("status takes at most one job id");
  std::string job_id;
  if (args.empty()) {
    ds::mr::pb::ListResponse list;
    if (!client.Call(&JobService::Stub::List, ds::mr::pb::ListRequest(), &list)) return kFailed;
    if (list.jobs().empty()) {
      std::cout << "no jobs\n";
      return kOk;
    }
    // Jobs are listed in submission order: the last one is the latest.
    job_id = list.jobs(list.jobs_size() - 1).job_id();
  } else {
    job_id = ds::mr::NormalizeJobId(args[0]);
  }
  ds::mr::pb::StatusRequest request;
  request.set_job_id(job_id);
  ds::mr::pb::StatusResponse response;
  if (!client.Call(&JobService::Stub::Status, request, &response)) return kFailed;
  std::cout << ds::mr::StatusReport(response.job(), absl::Now());
  return kOk;
}

int List(Client& client) {
  ds::mr::pb::ListResponse response;
  if (!client.Call(&JobService::Stub::List, ds::mr::pb::ListRequest(), &response)) return kFailed;
  std::cout << ds::mr::ListTable({response.jobs().begin(), response.jobs().end()}, absl::Now());
  return kOk;
}

int Workers(Client& client) {
  ds::mr::pb::ListWorkersResponse response;
  if (!client.Call(&JobService::Stub::ListWorkers, ds::mr::pb::ListWorkersRequest(), &response)) {
    return kFailed;
  }
  std::cout << "WORKER                 ADDRESS                APPS\n";
  for (const auto& w : response.workers()) {
    std::string id = w.worker_id(), address = w.address();
    id.resize(std::max<size_t>(id.size(), 22), ' ');
    address.resize(std::max<size_t>(address.size(), 22), ' ');
    std::cout << id << " " << address << " " << absl::StrJoin(w.apps(), ",") << "\n";
  }
  return kOk;
}

int Cancel(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 1) return Usage("cancel takes exactly one job id");
  ds::mr::pb::CancelRequest request;
  request.set_job_id(ds::mr::NormalizeJobId(args[0]));
  ds::mr::pb::CancelResponse response;
  if (!client.Call(&JobService::Stub::Cancel, request, &response)) return kFailed;
  const JobStatus& job = response.job();
  if (job.state() == ds::mr::pb::CANCELLED) {
    std::cout << job.job_id() << ": cancelled\n";
  } else {
    std::cout << job.job_id() << ": already " << ds::mr::StateName(job.state()) << "\n";
  }
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest;
  std::vector<std::string> inputs = ExtractInputs(argc, argv, &rest);
  std::vector<std::string> args =
      ds::common::InitProcess(static_cast<int>(rest.size()), rest.data(), kUsageText);
  for (const std::string& i : absl::GetFlag(FLAGS_input)) inputs.push_back(i);

  std::string address = absl::GetFlag(FLAGS_coordinator);
  if (address.empty()) {
    const char* env = std::getenv("MRRUN_COORDINATOR");
    address = env != nullptr && *env != '\0' ? env : "127.0.0.1:7070";
  }
  auto credentials = ds::common::ClientCredentialsFromFlags();
  if (!credentials.ok()) return Usage(std::string(credentials.status().message()));
  Client client(address, *credentials);
  if (!args.empty() && args[0] == "status") return Status(client, {args.begin() + 1, args.end()});
  if (!args.empty() && args[0] == "list") {
    if (args.size() > 1) return Usage("list takes no arguments");
    return List(client);
  }
  if (!args.empty() && args[0] == "cancel") return Cancel(client, {args.begin() + 1, args.end()});
  if (!args.empty() && args[0] == "workers") {
    if (args.size() > 1) return Usage("workers takes no arguments");
    return Workers(client);
  }
  // Anything else is a submission; plain arguments are more input files.
  inputs.insert(inputs.end(), args.begin(), args.end());
  return Submit(client, std::move(inputs));
}
