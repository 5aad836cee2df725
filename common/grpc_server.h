// The gRPC server every daemon runs: health service, reflection, a bound port
// reported back (listen on port 0 in tests), graceful shutdown with a deadline.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace ds::common {

struct GrpcServerOptions {
  // HOST:PORT to listen on. Port 0 picks a free port (see GrpcServer::port()).
  std::string listen_address = "127.0.0.1:0";
  // Largest message accepted or sent, in bytes. Default: 64 MiB (snapshots are
  // streamed in chunks, so this only bounds single requests).
  int max_message_bytes = 64 << 20;
  // Health-check service name reported SERVING while the server runs ("" is
  // the whole server).
  std::string health_service_name;
  // Whether the health service says SERVING as soon as the port is open.
  // false: NOT_SERVING until SetServing(true) (a replica: once it knows a
  // leader). Default: true.
  bool serving_at_start = true;
  // Threads of the synchronous server. Handlers run on the thread that polled
  // their request; a thread that finishes a call keeps polling while fewer than
  // `max_pollers` threads poll, else it exits. gRPC's default (1-2) makes a
  // server with many concurrent blocking handlers create and destroy a thread
  // per call, which cost more CPU than the call itself (kvraft-server at 64
  // clients). Unit: threads. Defaults: 2 / 256.
  int min_pollers = 2;
  int max_pollers = 256;
  // TLS (common/tls.h MakeServerCredentials). Null (default): plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
};

class GrpcServer {
 public:
  explicit GrpcServer(GrpcServerOptions options);
  ~GrpcServer();  // Shutdown(absl::ZeroDuration()) if still running.
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // Services must outlive the server. Call before Start().
  void AddService(grpc::Service* service);

  // Binds and starts serving. Fails if the address cannot be bound.
  absl::Status Start();

  // The bound port (valid after a successful Start).
  int port() const { return port_; }
  // "HOST:PORT" with the bound port.
  std::string address() const;

  // What the health service reports ("" and health_service_name) from now on.
  // Ignored once Shutdown has begun (NOT_SERVING for good).
  void SetServing(bool serving);

  // Marks the server NOT_SERVING, lets in-flight calls finish for up to
  // `deadline`, then cancels what is left. Idempotent.
  void Shutdown(absl::Duration deadline);

 private:
  GrpcServerOptions options_;
  std::vector<grpc::Service*> services_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<bool> shut_down_ = false;
};

// Blocks SIGTERM and SIGINT in the calling thread and every thread it starts
// later. Call first thing in main(), before any thread exists, then call
// WaitForShutdownSignal() once the daemon is serving.
void BlockShutdownSignals();

// Waits until SIGTERM or SIGINT arrives; returns the signal number.
int WaitForShutdownSignal();

}  // namespace ds::common
