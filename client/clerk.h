// Clerk: the client library of the KV-Raft service (and of kvctl, kvbench).
//
// - Leader caching: commands go to the replica that last answered as leader.
// - Retry: on UNAVAILABLE (not the leader; the trailing metadata may name the
//   leader) the clerk moves to the hinted replica or the next one; on a timeout
//   or a connection error it moves to the next replica; with a jittered
//   exponential backoff once every replica has been tried. It gives up when the
//   operation's deadline passes.
// - Exactly-once: every mutating command carries the clerk's client id and a
//   sequence number; a retry reuses the number, so the servers apply it once.
//
// One operation at a time per Clerk (calls are serialized by a mutex): a clerk
// is one client session. Use several clerks for concurrency.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "proto/kv.grpc.pb.h"

namespace ds::client {

struct ClerkOptions {
  // Replica client addresses, "HOST:PORT". Required, at least one.
  std::vector<std::string> endpoints;
  // Deadline of one whole operation, retries included. Default 10 s.
  absl::Duration operation_timeout = absl::Seconds(10);
  // Deadline of one attempt at one replica. Default 1 s. Must be less than
  // operation_timeout for retries to happen.
  absl::Duration attempt_timeout = absl::Seconds(1);
  // Backoff after a full round of replicas failed: starts here, doubles up to
  // max_backoff, with +-50% jitter. Defaults 20 ms and 500 ms.
  absl::Duration initial_backoff = absl::Milliseconds(20);
  absl::Duration max_backoff = absl::Milliseconds(500);
  // The session id; 0 (default) draws a random nonzero id.
  uint64_t client_id = 0;
  // Optional: one channel per endpoint (same order), shared with other clerks,
  // so that many clerks multiplex over few connections (kvbench --conns).
  // Empty (default): the clerk opens its own.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
};

// A channel to `endpoint` with the clerk's settings. Channels made with
// distinct `connection_id`s use distinct TCP connections.
std::shared_ptr<grpc::Channel> MakeKvChannel(const std::string& endpoint, int connection_id = 0);

struct GetResult {
  bool found = false;
  std::string value;  // "" when !found
};

class Clerk {
 public:
  // kInvalidArgument if no endpoint is given or an endpoint is not HOST:PORT.
  static absl::StatusOr<std::unique_ptr<Clerk>> Create(ClerkOptions options);

  // Linearizable read. A missing key is found = false, value "".
  absl::StatusOr<GetResult> Get(const std::string& key);
  absl::Status Put(const std::string& key, const std::string& value);
  absl::Status Append(const std::string& key, const std::string& value);
  // Returns whether the key existed.
  absl::StatusOr<bool> Delete(const std::string& key);

  // The status of one replica (no retry, no leader redirection).
  absl::StatusOr<kv::pb::StatusResponse> EndpointStatus(const std::string& endpoint);
  // OK if the replica's gRPC health check answers SERVING within attempt_timeout.
  absl::Status EndpointHealth(const std::string& endpoint);

  uint64_t client_id() const { return client_id_; }
  const std::vector<std::string>& endpoints() const { return options_.endpoints; }

 private:
  explicit Clerk(ClerkOptions options);

  // Runs `attempt(stub, ctx)` against replicas until it succeeds, fails with a
  // final error, or the operation deadline passes.
  template <typename Attempt>
  absl::Status WithRetries(const char* op, Attempt attempt) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  kv::pb::KvService::Stub* StubFor(size_t endpoint) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ClerkOptions options_;
  const uint64_t client_id_;
  absl::Mutex mu_;
  // Index into options_.endpoints of the presumed leader.
  size_t leader_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<std::unique_ptr<kv::pb::KvService::Stub>> stubs_ ABSL_GUARDED_BY(mu_);
};

// Parses "H:P,H:P,..." into endpoints; kInvalidArgument on an empty list or a
// malformed entry.
absl::StatusOr<std::vector<std::string>> ParseEndpoints(const std::string& list);

}  // namespace ds::client
