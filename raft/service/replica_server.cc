#include "raft/service/replica_server.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/init.h"
#include "common/metrics.h"
#include "common/net.h"
#include "common/tls.h"
#include "raft/storage/rocksdb_storage.h"

ABSL_FLAG(uint64_t, id, 0,
          "This replica's id: one of the ids in --peers, never reused for another machine (a "
          "replacement gets a new id). Required.");
ABSL_FLAG(std::string, peers, "",
          "Replicas of the group, ID=HOST:PORT,... (this one included; HOST:PORT is where peers "
          "reach it for Raft). Required. For a new group: its voters, the same list on every "
          "replica. Members added later are learned from the Raft configuration.");
ABSL_FLAG(std::string, initial_cluster_state, "new",
          "new: with an empty --data-dir, bootstrap a new group whose voters are --peers. "
          "existing: with an empty --data-dir, join a running group as a new member (add it "
          "first with `kvctl member add ID=HOST:PORT --learner`); it catches up from the leader "
          "and learns the members from it. Ignored once the data directory holds state.");
ABSL_FLAG(std::string, data_dir, "",
          "Directory of this replica's state (created if missing). Required.");
ABSL_FLAG(std::string, listen, "",
          "HOST:PORT to listen on for clients. Default: this replica's address in "
          "--client-endpoints, else in --peers.");
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
ABSL_FLAG(uint64_t, block_cache_bytes, 64ull << 20,
          "RocksDB block cache of the state on disk (index and filter blocks included): what "
          "reads keep in memory.");
ABSL_FLAG(uint64_t, memtable_bytes, 32ull << 20,
          "One memtable of the state on disk; up to two per column family are kept before "
          "they are flushed.");
ABSL_FLAG(std::string, state_compression, "snappy",
          "Compression of the state on disk: none, snappy, lz4 or zstd. none saves CPU when the "
          "values do not compress (random or already compressed bytes).");
ABSL_FLAG(uint64_t, snapshot_send_bytes_per_second, 0,
          "Pace of each snapshot file transfer this replica serves to a peer catching up; 0: "
          "as fast as the peer reads.");
ABSL_FLAG(uint64_t, snapshot_catchup_entries, 5000,
          "Log entries a snapshot leaves below its index, so that a follower that far behind "
          "catches up from the log instead of by receiving the snapshot (etcd keeps 5,000).");
ABSL_FLAG(uint64_t, snapshot_catchup_bytes, 16ull << 20,
          "At most this many bytes of the entries --snapshot-catchup-entries keeps (they stay "
          "in memory with the rest of the log).");
ABSL_FLAG(int, grpc_max_threads, 256,
          "Threads of gRPC's synchronous server, which serves only snapshot transfers and "
          "health checks (client requests and Raft messages hold no thread while they wait).");
ABSL_FLAG(absl::Duration, shutdown_deadline, absl::Seconds(5),
          "On SIGTERM, how long in-flight requests may run before they are cancelled.");
ABSL_FLAG(std::string, listen_peer, "",
          "HOST:PORT of a separate port for Raft traffic only (the addresses in --peers are "
          "then these ports, and --client-endpoints lists the client ports). Default: Raft "
          "shares the client port.");
ABSL_FLAG(std::string, client_endpoints, "",
          "Every replica's client address, ID=HOST:PORT,... (what clients are told of the "
          "leader). Required with --listen-peer. Default: the addresses in --peers.");
ABSL_FLAG(std::string, peer_tls_cert, "",
          "PEM certificate this replica presents to its peers (and serves on --listen-peer).");
ABSL_FLAG(std::string, peer_tls_key, "", "PEM private key of --peer-tls-cert.");
ABSL_FLAG(std::string, peer_tls_ca, "",
          "PEM CA that signs the replicas' certificates: Raft and shard-migration calls must "
          "carry a certificate it signed. Required with --tls-* or --peer-tls-cert.");

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
  const std::string state = absl::GetFlag(FLAGS_initial_cluster_state);
  if (state != "new" && state != "existing") {
    return absl::InvalidArgumentError(
        absl::StrCat("--initial-cluster-state must be new or existing, not \"", state, "\""));
  }
  o.join_existing = state == "existing";
  o.data_dir = absl::GetFlag(FLAGS_data_dir);
  if (o.data_dir.empty()) return absl::InvalidArgumentError("--data-dir is required");
  o.listen = absl::GetFlag(FLAGS_listen);
  o.listen_peer = absl::GetFlag(FLAGS_listen_peer);
  if (const std::string list = absl::GetFlag(FLAGS_client_endpoints); !list.empty()) {
    auto clients = common::ParsePeerList(list);
    if (!clients.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--client-endpoints: ", clients.status().message()));
    }
    o.client_endpoints = *clients;
  }
  o.tls = common::TlsFlags();
  o.peer_tls = {absl::GetFlag(FLAGS_peer_tls_cert), absl::GetFlag(FLAGS_peer_tls_key),
                absl::GetFlag(FLAGS_peer_tls_ca)};
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
  o.disk.block_cache_bytes = absl::GetFlag(FLAGS_block_cache_bytes);
  o.disk.memtable_bytes = absl::GetFlag(FLAGS_memtable_bytes);
  if (o.disk.memtable_bytes < (1 << 20)) {
    return absl::InvalidArgumentError("--memtable-bytes must be at least 1 MiB");
  }
  o.disk.compression = absl::GetFlag(FLAGS_state_compression);
  if (!IsCompressionName(o.disk.compression)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--state-compression must be none, snappy, "
                     "lz4 or zstd, not \"",
                     o.disk.compression, "\""));
  }
  o.snapshot_send_bytes_per_second = absl::GetFlag(FLAGS_snapshot_send_bytes_per_second);
  o.log_retention = {absl::GetFlag(FLAGS_snapshot_catchup_entries),
                     absl::GetFlag(FLAGS_snapshot_catchup_bytes)};
  o.grpc_max_threads = absl::GetFlag(FLAGS_grpc_max_threads);
  o.shutdown_deadline = absl::GetFlag(FLAGS_shutdown_deadline);
  o.metrics_listen = common::MetricsListenFlag();
  return o;
}

namespace {

// The data directory's format, recorded in DATA_DIR/FORMAT when the directory
// is first used. Version 2: log entries are rsm::pb::SessionCommand and
// snapshots SessionStateMachine's (2026-12-07). Directories without the file
// but with Raft state were written by earlier builds (version 1: KvCommand
// entries, registered sessions), whose logs this version would misread.
// Version 3 (2026-12-08): the state machine may keep its state on disk
// (DATA_DIR/state) and snapshots may be checkpoints, which version 2 cannot
// read. A version-2 directory is upgraded in place: its in-memory snapshot is
// converted when the replica restores it.
constexpr int kDataFormat = 3;

std::string Header(int version = kDataFormat) {
  return absl::StrCat("dstack replica data format ", version, "\n");
}

std::string FormatText(const ReplicaServerOptions& o, int version = kDataFormat) {
  std::string text = absl::StrCat(Header(version), "service ", o.service.name, "\n");
  for (const auto& [name, value] : o.fixed_parameters)
    absl::StrAppend(&text, name, " ", value, "\n");
  return text;
}

absl::Status CheckDataDir(const ReplicaServerOptions& o) {
  const std::string& dir = o.data_dir;
  const std::string path = dir + "/FORMAT";
  const std::string want = FormatText(o);
  absl::StatusOr<std::string> text = common::ReadWholeFile(path);
  if (text.ok()) {
    if (*text == want) return absl::OkStatus();
    if (*text == FormatText(o, 2)) return common::WriteFileDurably(path, want);  // the upgrade
    if (!absl::StartsWith(*text, Header())) {
      return absl::FailedPreconditionError(
          absl::StrCat("data directory ", dir, " has an unknown format (", path, " starts \"",
                       absl::CEscape(text->substr(0, text->find('\n'))),
                       "\"): written by another version; refusing to start"));
    }
    if (RecordField(*text, "service") != o.service.name) {
      return absl::FailedPreconditionError(absl::StrCat(
          "data directory ", dir, " belongs to a ", RecordField(*text, "service"), " replica, not ",
          o.service.name, ": refusing to start (wrong --data-dir?)"));
    }
    for (const auto& [name, value] : o.fixed_parameters) {
      if (RecordField(*text, name) != value) {
        return absl::FailedPreconditionError(absl::StrCat(
            "data directory ", dir, " was created with ", name, " ", RecordField(*text, name),
            ", but this replica was started with ", name, " ", value,
            ": it cannot change for an existing directory; refusing to start"));
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

absl::StatusOr<ReplicaServer::Security> ReplicaServer::MakeSecurity(
    const ReplicaServerOptions& o, std::shared_ptr<spdlog::logger> log) {
  const bool shared_port = o.listen_peer.empty();
  if (!shared_port && o.client_endpoints.empty()) {
    return absl::InvalidArgumentError(
        "--listen-peer needs --client-endpoints (the client port of every replica)");
  }
  if (!o.client_endpoints.empty()) {
    for (const auto& [id, addr] : o.peers) {
      if (!o.client_endpoints.contains(id)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--client-endpoints has no address for replica ", id, " of --peers"));
      }
    }
  }
  if ((o.tls.enabled() || !o.peer_tls.cert.empty()) &&
      (o.peer_tls.cert.empty() || o.peer_tls.ca.empty())) {
    return absl::InvalidArgumentError(
        "with TLS, replicas need --peer-tls-cert, --peer-tls-key and --peer-tls-ca: Raft and "
        "shard-migration calls must carry a certificate the peers' CA signed");
  }
  if (shared_port && o.peer_tls.enabled() && !o.tls.enabled()) {
    return absl::InvalidArgumentError(
        "--peer-tls-* with Raft on the client port needs --tls-cert and --tls-key too (the "
        "port's certificate), or a separate port for Raft (--listen-peer)");
  }
  Security sec;
  // The client port also takes the peers' certificates (shard migration, and
  // Raft when it shares the port); checked per call by `peer_check`.
  auto client_port = common::MakeServerCredentials(o.tls, "--tls", o.peer_tls.ca);
  if (!client_port.ok()) return client_port.status();
  sec.client_port = *client_port;
  if (!shared_port) {
    auto peer_port = common::MakeServerCredentials(o.peer_tls, "--peer-tls");
    if (!peer_port.ok()) return peer_port.status();
    sec.peer_port = *peer_port;
  }
  auto to_peers = common::MakeChannelCredentials(o.peer_tls, "--peer-tls", o.tls.ca);
  if (!to_peers.ok()) return to_peers.status();
  sec.to_peers = *to_peers;
  if (o.tls.enabled()) {
    auto check = common::PeerCertificateCheck::Create(o.peer_tls.ca, std::move(log));
    if (!check.ok()) return check.status();
    sec.peer_check = *check;
  }
  return sec;
}

int FailStart(const std::string& program, const absl::Status& status) {
  std::fprintf(stderr, "%s: %s\n", program.c_str(), std::string(status.message()).c_str());
  return 2;
}

ReplicaServer::ReplicaServer(ReplicaServerOptions options, Application* app, Security security)
    : options_(std::move(options)),
      security_(std::move(security)),
      server_({.listen_address = !options_.listen.empty() ? options_.listen
                                 : !options_.client_endpoints.empty()
                                     ? options_.client_endpoints.at(options_.id)
                                     : options_.peers.at(options_.id),
               .serving_at_start = false,
               .max_pollers = options_.grpc_max_threads,
               .credentials = security_.client_port}) {
  if (!options_.listen_peer.empty()) {
    peer_server_ = std::make_unique<common::GrpcServer>(common::GrpcServerOptions{
        .listen_address = options_.listen_peer, .credentials = security_.peer_port});
  }
}

std::function<grpc::Status(const grpc::ServerContextBase&)> ReplicaServer::peer_authorizer() const {
  if (security_.peer_check == nullptr) return nullptr;
  return [check = security_.peer_check](const grpc::ServerContextBase& ctx) {
    return check->Check(ctx, "peer call");
  };
}

std::shared_ptr<grpc::ChannelCredentials> ReplicaServer::credentials_to_client_ports() const {
  return options_.tls.enabled() ? security_.to_peers : grpc::InsecureChannelCredentials();
}

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
  const bool has_state = std::filesystem::exists(options.data_dir + "/raft", ec);
  if (absl::Status st = CheckDataDir(options); !st.ok()) return st;
  absl::StatusOr<MemberRecord> member = LoadOrCreateMember(
      options.data_dir, options.id, options.peers, options.join_existing, has_state);
  if (!member.ok()) return member.status();
  auto logger = common::MakeLogger(absl::StrCat(options.service.name, "-", options.id));
  auto security = MakeSecurity(options, logger);
  if (!security.ok()) return security.status();
  auto identity = PeerIdentity::Open(options.data_dir, *member, logger);
  if (!identity.ok()) return identity.status();
  std::unique_ptr<ReplicaServer> s(
      new ReplicaServer(std::move(options), app, std::move(*security)));
  const ReplicaServerOptions& o = s->options_;
  s->logger_ = std::move(logger);
  s->identity_ = std::move(*identity);

  if (o.state_on_disk) {
    DiskStateOptions disk = o.disk;
    disk.dir = o.data_dir + "/state";
    auto opened = DiskState::Open(std::move(disk));
    if (!opened.ok()) {
      return absl::Status(opened.status().code(),
                          absl::StrCat("opening the state: ", opened.status().message()));
    }
    s->disk_ = std::move(*opened);
  }
  s->sm_ = std::make_unique<SessionStateMachine>(app, o.sessions, s->disk_.get());
  if (absl::Status st = s->sm_->Open(); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat("loading the state: ", st.message()));
  }

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
  topts.credentials = s->security_.to_peers;
  // Raft on the client port under TLS: only peers' certificates may speak it
  // (on its own port the TLS handshake already demands one); and only members
  // of this group that did not lose their data (PeerIdentity).
  PeerIdentity* identity_ptr = s->identity_.get();
  topts.call_metadata = [identity_ptr](uint64_t peer) { return identity_ptr->CallMetadata(peer); };
  topts.on_refused = [identity_ptr](uint64_t peer, const grpc::Status& status) {
    identity_ptr->OnRefused(peer, status);
  };
  auto certificate = o.listen_peer.empty() ? s->peer_authorizer() : nullptr;
  topts.authorize = [identity_ptr, certificate](const grpc::ServerContextBase& ctx) {
    if (certificate) {
      if (grpc::Status st = certificate(ctx); !st.ok()) return st;
    }
    return identity_ptr->Check(ctx);
  };
  auto transport = std::make_unique<raft::GrpcTransport>(topts);
  s->transport_ = transport.get();
  std::shared_ptr<SnapshotFetcher> fetcher;
  if (s->disk_ != nullptr) {
    raft::GrpcTransport* t = s->transport_;
    fetcher = std::make_shared<SnapshotFetcher>(
        SnapshotFetcherOptions{.snapshots_dir = s->disk_->snapshots_dir(),
                               .address_of = [t](uint64_t peer) { return t->PeerAddress(peer); },
                               .credentials = s->security_.to_peers,
                               .call_metadata = topts.call_metadata,
                               .logger = s->logger_});
    s->snapshot_files_ = std::make_unique<SnapshotFilesService>(
        s->disk_->snapshots_dir(), topts.authorize, o.snapshot_send_bytes_per_second);
  }

  raft::NodeOptions nopts;
  nopts.id = o.id;
  // The bootstrap configuration (used only while the storage holds none):
  // the group's first voters, or none for a member joining an existing group.
  for (const auto& [pid, addr] : member->peers) {
    nopts.raft.peers.push_back(pid);
    nopts.raft.peer_addresses[pid] = addr;
  }
  if (member->existing) {
    s->logger_->info("member {} of an existing group: waiting for the leader to send the log",
                     o.id);
  }
  nopts.raft.election_ticks = o.election_ticks;
  nopts.raft.heartbeat_ticks = o.heartbeat_ticks;
  nopts.tick_interval = o.tick_interval;
  nopts.logger = s->logger_;
  nopts.snapshot_gate = fetcher;
  nopts.log_retention = o.log_retention;
  if (!o.metrics_listen.empty()) {
    s->metrics_ = std::make_unique<ReplicaMetrics>(o.service.name, o.id);
    nopts.metrics = s->metrics_->node();
  }
  auto rsm =
      raft::Rsm::Start(o.rsm, nopts, std::move(*storage), std::move(transport), s->sm_.get());
  if (!rsm.ok()) {
    return absl::Status(rsm.status().code(),
                        absl::StrCat("starting raft: ", rsm.status().message()));
  }
  s->rsm_ = std::move(*rsm);
  s->restore_index_ = s->rsm_->status().snapshot_index;

  ServiceOptions service = o.service;
  service.addresses = o.client_endpoints.empty() ? o.peers : o.client_endpoints;
  service.raft_address_serves_clients = o.listen_peer.empty();
  if (s->metrics_) service.request_metrics = s->metrics_->requests();
  s->context_ = std::make_unique<ReplicaContext>(std::move(service), s->rsm_.get(), s->sm_.get());
  s->replica_service_ = std::make_unique<ReplicaServiceImpl>(s->context_.get());
  (s->peer_server_ ? *s->peer_server_ : s->server_).AddService(s->transport_->service());
  if (s->snapshot_files_) {
    (s->peer_server_ ? *s->peer_server_ : s->server_).AddService(s->snapshot_files_.get());
  }
  s->server_.AddService(s->replica_service_.get());
  return s;
}

ReplicaServer::~ReplicaServer() { Shutdown(); }

void ReplicaServer::AddService(grpc::Service* service, std::function<void()> close_streams) {
  server_.AddService(service);
  if (close_streams) stream_closers_.push_back(std::move(close_streams));
}

absl::Status ReplicaServer::Serve() {
  if (peer_server_) {
    if (absl::Status st = peer_server_->Start(); !st.ok()) return st;
    logger_->info("replica {} serving Raft on {}{}", options_.id, peer_server_->address(),
                  options_.peer_tls.enabled() ? " (mutual TLS)" : "");
  }
  if (absl::Status st = server_.Start(); !st.ok()) return st;
  logger_->info("replica {} serving on {}{} (data {}, {} peers)", options_.id, server_.address(),
                !options_.tls.enabled()   ? ""
                : options_.tls.ca.empty() ? " (TLS)"
                                          : " (mutual TLS)",
                options_.data_dir, options_.peers.size());
  if (metrics_) {
    if (absl::Status st =
            metrics_->Serve(options_.metrics_listen, rsm_.get(), sm_.get(), &context_->options());
        !st.ok()) {
      return st;
    }
    logger_->info("metrics on http://{}/metrics", metrics_->address());
  }
  monitor_ = std::thread([this] { MonitorHealth(); });
  return absl::OkStatus();
}

bool ReplicaServer::Restored() const { return rsm_->status().applied >= restore_index_; }

void ReplicaServer::MonitorHealth() {
  const absl::Duration period = std::min(options_.tick_interval, absl::Milliseconds(100));
  do {
    const raft::NodeStatus st = rsm_->status();
    const bool serving = st.applied >= restore_index_ && st.leader != 0;
    if (serving != serving_.exchange(serving)) {
      server_.SetServing(serving);
      if (serving) {
        logger_->info("health: SERVING (leader {}, term {})", st.leader, st.term);
      } else {
        logger_->info("health: NOT_SERVING ({})",
                      st.applied < restore_index_ ? "restoring the snapshot" : "no leader known");
      }
    }
  } while (!stop_monitor_.WaitForNotificationWithTimeout(period));
}

int ReplicaServer::Run() {
  if (absl::Status st = Serve(); !st.ok()) {
    Shutdown();
    return FailStart(options_.program, st);
  }
  systemd_ = std::make_unique<common::SystemdNotifier>(logger_);
  if (systemd_->enabled()) {
    // systemd's start job ends at READY: not before the state is restored.
    // A leader is not awaited (the first replica of a group has none alone).
    while (!Restored()) absl::SleepFor(absl::Milliseconds(10));
    systemd_->Ready(absl::StrCat("replica ", options_.id, " serving on ", server_.address()));
    // Fed only while the Raft loop turns (it wakes at least every tick): a
    // hung Raft thread or a stopped process stops the pings.
    auto last_loops = std::make_shared<uint64_t>(rsm_->status().loops);
    systemd_->StartWatchdog([this, last_loops] {
      const uint64_t loops = rsm_->status().loops;
      const bool turned = loops != *last_loops;
      *last_loops = loops;
      return turned;
    });
  }
  const int sig = common::WaitForShutdownSignal();
  logger_->info("signal {}: shutting down", sig);
  systemd_->Stopping("shutting down");
  Shutdown();
  logger_->info("stopped");
  return 0;
}

void ReplicaServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (metrics_) metrics_->Stop();  // scrapes read the Rsm
  if (monitor_.joinable()) {
    stop_monitor_.Notify();
    monitor_.join();
  }
  systemd_.reset();  // the watchdog thread reads the Rsm
  // The server first (GrpcTransport's service must stop before the
  // transport), then Raft. Long-lived streams (clients' Batch, peers' Raft
  // streams) would hold the shutdown for its whole deadline: end them first;
  // unary calls in flight still get the deadline.
  for (auto& close : stream_closers_) close();
  if (transport_ != nullptr) transport_->CloseInboundStreams();
  server_.Shutdown(options_.shutdown_deadline);
  if (peer_server_) peer_server_->Shutdown(options_.shutdown_deadline);
  if (rsm_ != nullptr) rsm_->Stop();
}

}  // namespace ds::rsm
