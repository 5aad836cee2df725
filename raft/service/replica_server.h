// ReplicaServer: everything a replicated daemon (kvraft-server,
// shardctrler-server, shardkv-server) does besides its own state machine and
// service: the common flags, RocksDB storage + gRPC transport + Raft + Rsm under
// a SessionStateMachine, the Replica service (Status, Register), the gRPC
// server on one port for peers and clients, and the shutdown order. A daemon's
// main is then: options from flags, Start with its Application, add its
// service, Run.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/grpc_server.h"
#include "raft/rsm/rsm.h"
#include "raft/rsm/session_state_machine.h"
#include "raft/service/replica_service.h"
#include "raft/transport/grpc_transport.h"
#include "spdlog/spdlog.h"

namespace ds::rsm {

struct ReplicaServerOptions {
  // The daemon's name, for logs and messages ("kvraft-server").
  std::string program;
  // This replica's id, one of the ids in `peers`. Required.
  uint64_t id = 0;
  // Every replica of the group: id -> "host:port" (Raft peers and clients).
  std::map<uint64_t, std::string> peers;
  // Directory of this replica's state (created if missing); Raft's RocksDB
  // is under DATA_DIR/raft. Required.
  std::string data_dir;
  // Address to bind. "" (default): this replica's address in `peers`.
  std::string listen;
  raft::RsmOptions rsm;
  // Raft timing. Same on every replica. Defaults: 100 ms, 10, 1.
  absl::Duration tick_interval = absl::Milliseconds(100);
  int election_ticks = 10;
  int heartbeat_ticks = 1;
  // Client sessions; same on every replica.
  SessionOptions sessions;
  // The Replica service and the application's handlers (ServiceOptions.name
  // and .addresses are filled in by Start).
  ServiceOptions service;
  // Threads of gRPC's synchronous server, which serves only snapshot
  // transfers and health checks. Default: 256.
  int grpc_max_threads = 256;
  // On shutdown, how long in-flight requests may run before they are
  // cancelled. Default: 5 s.
  absl::Duration shutdown_deadline = absl::Seconds(5);
  // Settings fixed for the life of the data directory, "name value" lines
  // (for example "shards 10"): recorded in DATA_DIR/FORMAT when the directory
  // is first used, and a restart with other values is refused with a message
  // naming both. Default: none.
  std::vector<std::pair<std::string, std::string>> fixed_parameters;
};

// The options from the flags every replica daemon shares (defined in
// replica_server.cc: --id, --peers, --data-dir, --listen,
// --snapshot-threshold-bytes, --tick-interval, --election-ticks,
// --heartbeat-ticks, --request-timeout, --session-ttl, --max-sessions,
// --max-clock-skew, --grpc-max-threads, --shutdown-deadline). `service` is
// the name Status reports ("kvraft"). InvalidArgument with a message naming
// the flag.
absl::StatusOr<ReplicaServerOptions> ReplicaServerOptionsFromFlags(std::string program,
                                                                   std::string service);

// Prints "PROGRAM: MESSAGE" to stderr; returns exit status 2.
int FailStart(const std::string& program, const absl::Status& status);

class ReplicaServer {
 public:
  // Opens the storage, restores `app` (which must outlive the server) from the
  // latest snapshot and starts Raft. Serving starts with Serve() or Run().
  static absl::StatusOr<std::unique_ptr<ReplicaServer>> Start(ReplicaServerOptions options,
                                                              Application* app);
  ~ReplicaServer();  // Shutdown()

  const ReplicaContext& context() const { return *context_; }
  raft::Rsm& rsm() { return *rsm_; }
  const std::shared_ptr<spdlog::logger>& logger() const { return logger_; }

  // Adds the application's service (before Serve). `close_streams`, if set,
  // ends the service's long-lived streams at shutdown, so that the graceful
  // shutdown need not wait for them.
  void AddService(grpc::Service* service, std::function<void()> close_streams = nullptr);

  // Binds and serves.
  absl::Status Serve();
  // The bound address (after Serve).
  std::string address() const { return server_.address(); }

  // Serve, wait for SIGTERM or SIGINT (common::BlockShutdownSignals must have
  // been called first thing in main), shut down. Returns the exit status.
  int Run();

  // Ends streams, stops the gRPC server (in-flight calls get the shutdown
  // deadline), then Raft. Idempotent.
  void Shutdown();

 private:
  ReplicaServer(ReplicaServerOptions options, Application* app);

  const ReplicaServerOptions options_;
  std::shared_ptr<spdlog::logger> logger_;
  SessionStateMachine sm_;
  raft::GrpcTransport* transport_ = nullptr;  // owned by the Rsm's Node
  std::unique_ptr<raft::Rsm> rsm_;
  std::unique_ptr<ReplicaContext> context_;
  std::unique_ptr<ReplicaServiceImpl> replica_service_;
  common::GrpcServer server_;
  std::vector<std::function<void()>> stream_closers_;
  bool shut_down_ = false;
};

}  // namespace ds::rsm
