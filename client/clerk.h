// Clerk: the blocking client library of the KV-Raft service (kvctl, tests).
// A KvClient (client/kv_client.h) over unary gRPC calls: it finds the leader
// by asking every replica at once, follows hints, retries with back-off until
// the operation's deadline, and gives its writes exactly-once semantics with a
// client session that its first write opens (see client/replica_client.h).
//
// Expired session: a session idle longer than the servers' --session-ttl (or
// evicted by --max-sessions) is forgotten. A write that finds it so is sent
// again under a new session only if no earlier attempt of it can have been
// applied; otherwise it fails with kAborted and its outcome is unknown: the
// caller decides (for example reads the key) whether to issue it again. The
// clerk's next write uses the new session either way.
//
// One operation at a time per Clerk (a clerk is one client session); calls
// from several threads wait for each other, outside every lock the requests
// use. Use several clerks for concurrency.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/kv_client.h"
#include "client/replica_client.h"
#include "grpcpp/grpcpp.h"
#include "proto/kv.grpc.pb.h"

namespace ds::client {

struct ClerkOptions {
  // Replica client addresses, "HOST:PORT". Required, at least one.
  std::vector<std::string> endpoints;
  // Deadline of one whole operation, retries included. Default 10 s.
  absl::Duration operation_timeout = absl::Seconds(10);
  // Deadline of one attempt (or leader probe) at one replica. Default 1 s.
  // Must be less than operation_timeout for retries to happen.
  absl::Duration attempt_timeout = absl::Seconds(1);
  // Backoff after a full round of replicas failed: starts here, doubles up to
  // max_backoff, with +-50% jitter. Defaults 20 ms and 500 ms.
  absl::Duration initial_backoff = absl::Milliseconds(20);
  absl::Duration max_backoff = absl::Milliseconds(500);
  // Resume a session of an earlier clerk (Clerk::session() of it): its id,
  // creation time and last sequence number; writes continue after it. Resuming
  // with a number lower than the session's last one makes writes fail
  // (kAlreadyExists) or be answered from the servers' cache without being
  // applied. client_id 0 (default): start a new session.
  SessionState session;
  // Optional: one channel per endpoint (same order), shared with other clerks.
  // Empty (default): the clerk opens its own.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  // TLS for the channels the clerk opens (common/tls.h). Null (default):
  // plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
};

RetryOptions ToRetryOptions(const ClerkOptions& options);

// What every blocking clerk checks: at least one endpoint, each HOST:PORT;
// positive timeouts; one channel per endpoint if channels are given.
absl::Status ValidateClerkOptions(const ClerkOptions& options);

// The unary-call transport of a service's blocking clerk: one `Service` stub
// per replica over GrpcReplicas (leader probes, timer, tracked calls); the
// service's transport adds Send on top of stub(i) and grpc().Call.
template <typename Base, typename Service>
class UnaryTransport : public Base {
 public:
  explicit UnaryTransport(const ClerkOptions& options)
      : grpc_(options.endpoints, options.channels, options.credentials) {
    for (size_t i = 0; i < grpc_.endpoints().size(); ++i) {
      stubs_.push_back(Service::NewStub(grpc_.channel(i)));
    }
  }

  const std::vector<std::string>& endpoints() const override { return grpc_.endpoints(); }
  void Probe(size_t i, absl::Time deadline,
             std::function<void(absl::StatusOr<rsm::pb::StatusResponse>)> done) override {
    grpc_.Probe(i, deadline, std::move(done));
  }
  void RunAt(absl::Time when, std::function<void()> fn) override {
    grpc_.RunAt(when, std::move(fn));
  }

 protected:
  typename Service::Stub* stub(size_t i) { return stubs_[i].get(); }
  GrpcReplicas& grpc() { return grpc_; }

 private:
  std::vector<std::unique_ptr<typename Service::Stub>> stubs_;
  GrpcReplicas grpc_;  // destroyed first: cancels calls in flight, then the stubs go
};

// Unary KvService calls over one channel per replica (the callback API).
class GrpcKvTransport final : public UnaryTransport<KvTransport, kv::pb::KvService> {
 public:
  using UnaryTransport::UnaryTransport;
  void Send(size_t i, kv::pb::KvRequest request, absl::Time deadline,
            std::function<void(kv::pb::KvResponse)> done) override;
};

class Clerk {
 public:
  // kInvalidArgument if no endpoint is given or an endpoint is not HOST:PORT.
  static absl::StatusOr<std::unique_ptr<Clerk>> Create(ClerkOptions options);
  ~Clerk();

  // Linearizable read. A missing key is found = false, value "".
  absl::StatusOr<GetResult> Get(const std::string& key);
  absl::Status Put(const std::string& key, const std::string& value);
  absl::Status Append(const std::string& key, const std::string& value);
  // Returns whether the key existed.
  absl::StatusOr<bool> Delete(const std::string& key);

  // The status of one replica (no retry, no leader redirection).
  absl::StatusOr<rsm::pb::StatusResponse> EndpointStatus(const std::string& endpoint);
  // OK if the replica's gRPC health check answers SERVING within attempt_timeout.
  absl::Status EndpointHealth(const std::string& endpoint);

  // The session: what a later clerk needs to resume it.
  SessionState session() const { return client_->session(); }
  const std::vector<std::string>& endpoints() const { return options_.endpoints; }

 private:
  explicit Clerk(ClerkOptions options);

  const ClerkOptions options_;
  std::unique_ptr<GrpcKvTransport> transport_;
  std::unique_ptr<KvClient> client_;
  OneOperationAtATime turns_;  // one operation at a time
};

}  // namespace ds::client
