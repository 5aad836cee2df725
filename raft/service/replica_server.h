// ReplicaServer: everything a replicated daemon (kvraft-server,
// shardctrler-server, shardkv-server) does besides its own state machine and
// service: the common flags, RocksDB storage + gRPC transport + Raft + Rsm under
// a SessionStateMachine, the Replica service (Status, Register), the gRPC
// server (one port for peers and clients, or a separate Raft port), TLS,
// health that follows "restored and a leader known", systemd notification,
// and the shutdown order. A daemon's
// main is then: options from flags, Start with its Application, add its
// service, Run.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/grpc_server.h"
#include "common/systemd_notify.h"
#include "common/tls.h"
#include "raft/rsm/disk_state.h"
#include "raft/rsm/rsm.h"
#include "raft/rsm/session_state_machine.h"
#include "raft/service/peer_identity.h"
#include "raft/service/replica_metrics.h"
#include "raft/service/replica_service.h"
#include "raft/service/snapshot_files.h"
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
  // --initial-cluster-state=existing: with an empty data directory, start
  // outside the group's configuration (a new member, added with `kvctl member
  // add`) and learn it from the leader, instead of bootstrapping a new group
  // from `peers`. Ignored once the data directory holds state.
  bool join_existing = false;
  // Address to bind for clients. "" (default): this replica's address in
  // `client_endpoints`, else in `peers`.
  std::string listen;
  // Address of a separate port serving only Raft (the addresses in `peers`
  // are then such ports). "" (default): Raft shares the client port.
  std::string listen_peer;
  // Every replica's client address (told to clients as the leader's). Empty
  // (default): those of `peers`. Required with `listen_peer`.
  std::map<uint64_t, std::string> client_endpoints;
  // TLS of the client port, and of the peers' connections (common/tls.h;
  // rules in docs/operations.md). Empty (default): plaintext.
  common::TlsFiles tls;
  common::TlsFiles peer_tls;
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
  // Keep the state machine's state in RocksDB under DATA_DIR/state
  // (raft/rsm/disk_state.h), with checkpoints as snapshots; false: in memory,
  // serialized whole into each snapshot. Default: true.
  bool state_on_disk = true;
  // Memory of the state on disk (dir is filled in by Start).
  DiskStateOptions disk;
  // Pace of each snapshot file transfer served to a peer. Unit: bytes per
  // second. 0 (default): unpaced.
  uint64_t snapshot_send_bytes_per_second = 0;
  // Entries a snapshot leaves in the log for followers a little behind
  // (NodeOptions::log_retention). Default: 5,000 entries (etcd's), 16 MiB.
  raft::LogRetention log_retention{5000, 16ull << 20};
  // HOST:PORT of the Prometheus endpoint (http://HOST:PORT/metrics; port 0
  // picks one, see metrics_port()). "" (default): no metrics.
  std::string metrics_listen;
};

// The options from the flags every replica daemon shares (defined in
// replica_server.cc: --id, --peers, --data-dir, --listen,
// --snapshot-threshold-bytes, --tick-interval, --election-ticks,
// --heartbeat-ticks, --request-timeout, --session-ttl, --max-sessions,
// --max-clock-skew, --block-cache-bytes, --memtable-bytes,
// --snapshot-send-bytes-per-second, --snapshot-catchup-entries,
// --snapshot-catchup-bytes, --grpc-max-threads, --shutdown-deadline, --listen-peer,
// --client-endpoints, --tls-*, --peer-tls-*). `service` is
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
  // The metrics endpoint's bound port (after Serve); 0 without metrics.
  int metrics_port() const { return metrics_ ? metrics_->port() : 0; }

  // Serve, wait until the local state is restored (the snapshot applied),
  // tell systemd READY (when under systemd; and feed its watchdog while the
  // Raft loop runs), wait for SIGTERM or SIGINT (common::BlockShutdownSignals
  // must have been called first thing in main), shut down. Returns the exit
  // status.
  int Run();

  // Checks that a call carries a peer's certificate when TLS is on (for
  // services only peers may call, such as shard migration); null when TLS
  // is off.
  std::function<grpc::Status(const grpc::ServerContextBase&)> peer_authorizer() const;
  // Credentials for calls this replica makes to other daemons' client ports
  // (other groups' migration service, the controllers): its peer certificate
  // under TLS, else plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials_to_client_ports() const;

  // Whether the state is restored and a leader is known: what the health
  // service reports (SERVING / NOT_SERVING), refreshed every tick.
  bool serving() const { return serving_; }

  // Ends streams, stops the gRPC server (in-flight calls get the shutdown
  // deadline), then Raft. Idempotent.
  void Shutdown();

 private:
  struct Security {
    std::shared_ptr<grpc::ServerCredentials> client_port;
    std::shared_ptr<grpc::ServerCredentials> peer_port;  // with listen_peer
    std::shared_ptr<grpc::ChannelCredentials> to_peers;
    std::shared_ptr<common::PeerCertificateCheck> peer_check;  // null: TLS off
  };
  static absl::StatusOr<Security> MakeSecurity(const ReplicaServerOptions& o,
                                               std::shared_ptr<spdlog::logger> log);
  ReplicaServer(ReplicaServerOptions options, Application* app, Security security);
  // Every tick until Shutdown: health follows "restored and a leader known".
  void MonitorHealth();
  bool Restored() const;

  const ReplicaServerOptions options_;
  const Security security_;
  std::shared_ptr<spdlog::logger> logger_;
  // Who this replica is, and which peers may speak Raft to it (the
  // transport's checks use it: declared before the Rsm, so destroyed after).
  std::unique_ptr<PeerIdentity> identity_;
  // Before the Rsm and the context, which use its metrics.
  std::unique_ptr<ReplicaMetrics> metrics_;
  // The state on disk (null in memory mode), before the state machine that
  // uses it.
  std::unique_ptr<DiskState> disk_;
  std::unique_ptr<SessionStateMachine> sm_;
  std::unique_ptr<SnapshotFilesService> snapshot_files_;
  raft::GrpcTransport* transport_ = nullptr;  // owned by the Rsm's Node
  std::unique_ptr<raft::Rsm> rsm_;
  std::unique_ptr<ReplicaContext> context_;
  std::unique_ptr<ReplicaServiceImpl> replica_service_;
  common::GrpcServer server_;
  std::unique_ptr<common::GrpcServer> peer_server_;  // with listen_peer
  std::vector<std::function<void()>> stream_closers_;
  // The snapshot index found on disk at start: restored once applied past it.
  uint64_t restore_index_ = 0;
  std::atomic<bool> serving_ = false;
  absl::Notification stop_monitor_;
  std::thread monitor_;
  std::unique_ptr<common::SystemdNotifier> systemd_;
  bool shut_down_ = false;
};

}  // namespace ds::rsm
