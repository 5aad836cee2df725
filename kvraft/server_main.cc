// kvraft-server: one replica of the Raft-replicated key/value service. One gRPC
// port serves both the Raft peers (RaftService) and clients (KvService).
#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_server.h"
#include "common/init.h"
#include "common/net.h"
#include "kvraft/kv_service.h"
#include "raft/grpc_transport.h"
#include "raft/rocksdb_storage.h"
#include "raft/rsm.h"

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
ABSL_FLAG(uint64_t, max_request_bytes, 1536 * 1024,
          "Largest key + value of one request, in bytes.");
ABSL_FLAG(absl::Duration, request_timeout, absl::Seconds(5),
          "Longest a request waits to be applied when the client's deadline is later.");
ABSL_FLAG(absl::Duration, session_ttl, absl::Hours(1),
          "Client sessions idle this long are forgotten. Same on every replica.");
ABSL_FLAG(int, grpc_max_threads, 256,
          "Threads of gRPC's synchronous server, which serves only snapshot transfers and "
          "health checks (client requests and Raft messages hold no thread while they wait).");
ABSL_FLAG(absl::Duration, shutdown_deadline, absl::Seconds(5),
          "On SIGTERM, how long in-flight requests may run before they are cancelled.");

namespace {

constexpr char kUsage[] = R"(kvraft-server: one replica of the Raft-replicated key/value service.

Usage: kvraft-server --id=N --peers=1=HOST:PORT,2=HOST:PORT,3=HOST:PORT --data-dir=DIR
Start one process per replica with the same --peers. Clients (kvctl, kvbench)
talk to any replica's address; a follower answers UNAVAILABLE with the
leader's address. Restarting with the same --data-dir recovers every
acknowledged write. SIGTERM or SIGINT shuts down gracefully.)";

int Fail(const std::string& msg) {
  std::fprintf(stderr, "kvraft-server: %s\n", msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  ds::common::BlockShutdownSignals();
  ds::common::InitProcess(argc, argv, kUsage);

  const uint64_t id = absl::GetFlag(FLAGS_id);
  auto peers = ds::common::ParsePeerList(absl::GetFlag(FLAGS_peers));
  if (!peers.ok()) return Fail(absl::StrCat("--peers: ", peers.status().message()));
  if (id == 0 || !peers->contains(id)) return Fail("--id must be one of the ids in --peers");
  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  if (data_dir.empty()) return Fail("--data_dir is required");
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return Fail(absl::StrCat("cannot create --data_dir ", data_dir, ": ", ec.message()));
  if (absl::GetFlag(FLAGS_election_ticks) <= absl::GetFlag(FLAGS_heartbeat_ticks)) {
    return Fail("--election_ticks must be larger than --heartbeat_ticks");
  }

  auto log = ds::common::MakeLogger(absl::StrCat("kvraft-", id));
  auto storage = ds::raft::RocksDbStorage::Open(data_dir + "/raft");
  if (!storage.ok()) return Fail(absl::StrCat("opening storage: ", storage.status().ToString()));

  ds::raft::GrpcTransportOptions topts;
  topts.id = id;
  for (const auto& [pid, addr] : *peers) {
    if (pid != id) topts.peers[pid] = addr;
  }
  auto transport = std::make_unique<ds::raft::GrpcTransport>(topts);
  ds::raft::GrpcTransport* transport_ptr = transport.get();

  ds::raft::NodeOptions nopts;
  nopts.id = id;
  for (const auto& [pid, addr] : *peers) nopts.raft.peers.push_back(pid);
  nopts.raft.election_ticks = absl::GetFlag(FLAGS_election_ticks);
  nopts.raft.heartbeat_ticks = absl::GetFlag(FLAGS_heartbeat_ticks);
  nopts.tick_interval = absl::GetFlag(FLAGS_tick_interval);
  nopts.logger = log;

  ds::kv::KvReplicatedStateMachine sm(
      {.sessions = {.session_ttl = absl::GetFlag(FLAGS_session_ttl)}});
  auto rsm = ds::raft::Rsm::Start(
      {.snapshot_threshold_bytes = absl::GetFlag(FLAGS_snapshot_threshold_bytes)}, nopts,
      std::move(*storage), std::move(transport), &sm);
  if (!rsm.ok()) return Fail(absl::StrCat("starting raft: ", rsm.status().ToString()));

  ds::kv::KvServiceImpl service({.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes),
                                 .request_timeout = absl::GetFlag(FLAGS_request_timeout),
                                 .addresses = *peers},
                                rsm->get());
  std::string listen = absl::GetFlag(FLAGS_listen);
  if (listen.empty()) listen = peers->at(id);
  ds::common::GrpcServer server(
      {.listen_address = listen, .max_pollers = absl::GetFlag(FLAGS_grpc_max_threads)});
  server.AddService(transport_ptr->service());
  server.AddService(&service);
  if (absl::Status st = server.Start(); !st.ok()) {
    (*rsm)->Stop();
    return Fail(st.ToString());
  }
  log->info("replica {} serving on {} (data {}, {} peers)", id, server.address(), data_dir,
            peers->size());

  int sig = ds::common::WaitForShutdownSignal();
  log->info("signal {}: shutting down", sig);
  // The server first (GrpcTransport's service must stop before the transport),
  // then Raft.
  // Long-lived streams (clients' Batch, peers' Raft streams) would hold the
  // shutdown for its whole deadline: end them first; unary calls in flight
  // still get the deadline.
  service.CloseStreams();
  transport_ptr->CloseInboundStreams();
  server.Shutdown(absl::GetFlag(FLAGS_shutdown_deadline));
  (*rsm)->Stop();
  log->info("stopped");
  return 0;
}
