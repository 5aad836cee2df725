#include "raft/service/replica_server.h"

#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/init.h"
#include "common/net.h"
#include "raft/storage/rocksdb_storage.h"

ABSL_FLAG(uint64_t, id, 0, "This replica's id: one of the ids in --peers. Required.");
ABSL_FLAG(std::string, peers, "",
          "Every replica of the group, ID=HOST:PORT,... (this one included). Required. The "
          "same list on every replica.");
ABSL_FLAG(std::string, data_dir, "",
          "Directory of this replica's state (created if missing). Required.");
ABSL_FLAG(std::string, listen, "",
          "HOST:PORT to listen on. Default: this replica's address in --peers.");
ABSL_FLAG(uint64_t, snapshot_threshold_bytes, 64ull << 20,
          "Snapshot when the persisted Raft log exceeds this many bytes; 0 never snapshots.");
ABSL_FLAG(absl::Duration, tick_interval, absl::Milliseconds(100), "Raft tick period.");
ABSL_FLAG(int, election_ticks, 10,
          "Election timeout in ticks (randomized in [n, 2n)). Same on every replica.");
ABSL_FLAG(int, heartbeat_ticks, 1, "Leader heartbeat period in ticks.");
ABSL_FLAG(absl::Duration, request_timeout, absl::Seconds(5),
          "Longest a request waits to be applied when the client's deadline is later.");
ABSL_FLAG(absl::Duration, session_ttl, absl::Hours(1),
          "Client sessions idle this long are forgotten. Same on every replica.");
ABSL_FLAG(int64_t, max_sessions, 100000,
          "Most client sessions kept; opening one more forgets the least recently used. 0: no "
          "bound. Same on every replica.");
ABSL_FLAG(absl::Duration, max_clock_skew, absl::Minutes(10),
          "A new client session created further than this ahead of the leader's clock is "
          "refused. Same on every replica.");
ABSL_FLAG(int, grpc_max_threads, 256,
          "Threads of gRPC's synchronous server, which serves only snapshot transfers and "
          "health checks (client requests and Raft messages hold no thread while they wait).");
ABSL_FLAG(absl::Duration, shutdown_deadline, absl::Seconds(5),
          "On SIGTERM, how long in-flight requests may run before they are cancelled.");

namespace ds::rsm {

absl::StatusOr<ReplicaServerOptions> ReplicaServerOptionsFromFlags(std::string program,
                                                                   std::string service) {
  ReplicaServerOptions o;
  o.program = std::move(program);
  o.service.name = std::move(service);
  o.id = absl::GetFlag(FLAGS_id);
  auto peers = common::ParsePeerList(absl::GetFlag(FLAGS_peers));
  if (!peers.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--peers: ", peers.status().message()));
  }
  o.peers = *peers;
  if (o.id == 0 || !o.peers.contains(o.id)) {
    return absl::InvalidArgumentError("--id must be one of the ids in --peers");
  }
  o.data_dir = absl::GetFlag(FLAGS_data_dir);
  if (o.data_dir.empty()) return absl::InvalidArgumentError("--data-dir is required");
  o.listen = absl::GetFlag(FLAGS_listen);
  o.rsm.snapshot_threshold_bytes = absl::GetFlag(FLAGS_snapshot_threshold_bytes);
  o.tick_interval = absl::GetFlag(FLAGS_tick_interval);
  o.election_ticks = absl::GetFlag(FLAGS_election_ticks);
  o.heartbeat_ticks = absl::GetFlag(FLAGS_heartbeat_ticks);
  if (o.tick_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--tick-interval must be positive");
  }
  if (o.heartbeat_ticks < 1 || o.election_ticks <= o.heartbeat_ticks) {
    return absl::InvalidArgumentError(
        "--election-ticks must be larger than --heartbeat-ticks, which must be at least 1");
  }
  o.service.request_timeout = absl::GetFlag(FLAGS_request_timeout);
  if (o.service.request_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--request-timeout must be positive");
  }
  o.sessions.session_ttl = absl::GetFlag(FLAGS_session_ttl);
  o.sessions.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  o.sessions.max_clock_skew = absl::GetFlag(FLAGS_max_clock_skew);
  if (o.sessions.session_ttl <= absl::ZeroDuration() || o.sessions.max_sessions < 0 ||
      o.sessions.max_clock_skew < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--session-ttl must be positive, --max-sessions and --max-clock-skew not negative");
  }
  o.grpc_max_threads = absl::GetFlag(FLAGS_grpc_max_threads);
  o.shutdown_deadline = absl::GetFlag(FLAGS_shutdown_deadline);
  return o;
}

namespace {

// The data directory's format, recorded in DATA_DIR/FORMAT when the directory
// is first used. Version 2: log entries are rsm::pb::SessionCommand and
// snapshots SessionStateMachine's (2026-12-07). Directories without the file
// but with Raft state were written by earlier builds (version 1: KvCommand
// entries, registered sessions), whose logs this version would misread.
constexpr int kDataFormat = 2;

std::string Header() { return absl::StrCat("dstack replica data format ", kDataFormat, "\n"); }

std::string FormatText(const ReplicaServerOptions& o) {
  std::string text = absl::StrCat(Header(), "service ", o.service.name, "\n");
  for (const auto& [name, value] : o.fixed_parameters)
    absl::StrAppend(&text, name, " ", value, "\n");
  return text;
}

// The value of line "name ..." in `text`, or "" if absent.
std::string Field(const std::string& text, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, name + " ")) return std::string(line.substr(name.size() + 1));
  }
  return "";
}

absl::Status CheckDataDir(const ReplicaServerOptions& o) {
  const std::string& dir = o.data_dir;
  const std::string path = dir + "/FORMAT";
  const std::string want = FormatText(o);
  absl::StatusOr<std::string> text = common::ReadWholeFile(path);
  if (text.ok()) {
    if (*text == want) return absl::OkStatus();
    if (!absl::StartsWith(*text, Header())) {
      return absl::FailedPreconditionError(
          absl::StrCat("data directory ", dir, " has an unknown format (", path, " starts \"",
                       absl::CEscape(text->substr(0, text->find('\n'))),
                       "\"): written by another version; refusing to start"));
    }
    if (Field(*text, "service") != o.service.name) {
      return absl::FailedPreconditionError(absl::StrCat(
          "data directory ", dir, " belongs to a ", Field(*text, "service"), " replica, not ",
          o.service.name, ": refusing to start (wrong --data-dir?)"));
    }
    for (const auto& [name, value] : o.fixed_parameters) {
      if (Field(*text, name) != value) {
        return absl::FailedPreconditionError(
            absl::StrCat("data directory ", dir, " was created with ", name, " ",
                         Field(*text, name), ", but this replica was started with ", name, " ",
                         value, ": it cannot change for an existing directory; refusing to start"));
      }
    }
    return absl::FailedPreconditionError(absl::StrCat("data directory ", dir, ": ", path,
                                                      " does not match this replica's settings"));
  }
  if (text.status().code() != absl::StatusCode::kNotFound) return text.status();
  std::error_code ec;
  if (std::filesystem::exists(dir + "/raft", ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data directory ", dir,
        " was written by a build older than the replicated-service layer (2026-12-07; no "
        "FORMAT file): its Raft log cannot be replayed by this version. Start this replica "
        "from an empty data directory (copy the data out with the old build first if you "
        "need it)"));
  }
  return common::WriteFileDurably(path, want);
}

}  // namespace

int FailStart(const std::string& program, const absl::Status& status) {
  std::fprintf(stderr, "%s: %s\n", program.c_str(), std::string(status.message()).c_str());
  return 2;
}

ReplicaServer::ReplicaServer(ReplicaServerOptions options, Application* app)
    : options_(std::move(options)),
      sm_(app, options_.sessions),
      server_({.listen_address =
                   options_.listen.empty() ? options_.peers.at(options_.id) : options_.listen,
               .max_pollers = options_.grpc_max_threads}) {}

absl::StatusOr<std::unique_ptr<ReplicaServer>> ReplicaServer::Start(ReplicaServerOptions options,
                                                                    Application* app) {
  if (options.id == 0 || !options.peers.contains(options.id)) {
    return absl::InvalidArgumentError("the replica id must be one of the peers' ids");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create the data directory ", options.data_dir, ": ", ec.message()));
  }
  if (absl::Status st = CheckDataDir(options); !st.ok()) return st;
  std::unique_ptr<ReplicaServer> s(new ReplicaServer(std::move(options), app));
  const ReplicaServerOptions& o = s->options_;
  s->logger_ = common::MakeLogger(absl::StrCat(o.service.name, "-", o.id));

  auto storage = raft::RocksDbStorage::Open(o.data_dir + "/raft");
  if (!storage.ok()) {
    return absl::Status(storage.status().code(),
                        absl::StrCat("opening storage: ", storage.status().message()));
  }
  raft::GrpcTransportOptions topts;
  topts.id = o.id;
  for (const auto& [pid, addr] : o.peers) {
    if (pid != o.id) topts.peers[pid] = addr;
  }
  auto transport = std::make_unique<raft::GrpcTransport>(topts);
  s->transport_ = transport.get();

  raft::NodeOptions nopts;
  nopts.id = o.id;
  for (const auto& [pid, addr] : o.peers) nopts.raft.peers.push_back(pid);
  nopts.raft.election_ticks = o.election_ticks;
  nopts.raft.heartbeat_ticks = o.heartbeat_ticks;
  nopts.tick_interval = o.tick_interval;
  nopts.logger = s->logger_;
  auto rsm = raft::Rsm::Start(o.rsm, nopts, std::move(*storage), std::move(transport), &s->sm_);
  if (!rsm.ok()) {
    return absl::Status(rsm.status().code(),
                        absl::StrCat("starting raft: ", rsm.status().message()));
  }
  s->rsm_ = std::move(*rsm);

  ServiceOptions service = o.service;
  service.addresses = o.peers;
  s->context_ = std::make_unique<ReplicaContext>(std::move(service), s->rsm_.get(), &s->sm_);
  s->replica_service_ = std::make_unique<ReplicaServiceImpl>(s->context_.get());
  s->server_.AddService(s->transport_->service());
  s->server_.AddService(s->replica_service_.get());
  return s;
}

ReplicaServer::~ReplicaServer() { Shutdown(); }

void ReplicaServer::AddService(grpc::Service* service, std::function<void()> close_streams) {
  server_.AddService(service);
  if (close_streams) stream_closers_.push_back(std::move(close_streams));
}

absl::Status ReplicaServer::Serve() {
  if (absl::Status st = server_.Start(); !st.ok()) return st;
  logger_->info("replica {} serving on {} (data {}, {} peers)", options_.id, server_.address(),
                options_.data_dir, options_.peers.size());
  return absl::OkStatus();
}

int ReplicaServer::Run() {
  if (absl::Status st = Serve(); !st.ok()) {
    Shutdown();
    return FailStart(options_.program, st);
  }
  const int sig = common::WaitForShutdownSignal();
  logger_->info("signal {}: shutting down", sig);
  Shutdown();
  logger_->info("stopped");
  return 0;
}

void ReplicaServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  // The server first (GrpcTransport's service must stop before the
  // transport), then Raft. Long-lived streams (clients' Batch, peers' Raft
  // streams) would hold the shutdown for its whole deadline: end them first;
  // unary calls in flight still get the deadline.
  for (auto& close : stream_closers_) close();
  if (transport_ != nullptr) transport_->CloseInboundStreams();
  server_.Shutdown(options_.shutdown_deadline);
  if (rsm_ != nullptr) rsm_->Stop();
}

}  // namespace ds::rsm
