// Clerk: the client library of the KV-Raft service (and of kvctl, kvbench).
//
// - Leader caching: commands go to the replica that last answered as leader.
// - Retry: on UNAVAILABLE (not the leader; the trailing metadata may name the
//   leader) the clerk moves to the hinted replica or the next one; on a timeout
//   or a connection error it moves to the next replica; with a jittered
//   exponential backoff once every replica has been tried. It gives up when the
//   operation's deadline passes.
// - Exactly-once (Raft thesis §6.3): before its first write the clerk opens a
//   session with the Register RPC (the cluster picks the id); every write then
//   carries that id and a sequence number 1, 2, 3, ...; a retry reuses the
//   number, so the servers apply it once. Get needs no session.
// - Expired session: a session idle longer than the servers' --session-ttl (or
//   evicted) is forgotten, and the write that finds it so fails with
//   kFailedPrecondition. The clerk returns that error and does NOT re-register
//   and re-send the write by itself: the write may already have been applied
//   under the old session, so sending it again could apply it twice. Its
//   outcome is unknown; the caller decides (for example reads the key) whether
//   to issue it again. The clerk forgets the dead session, so its next write
//   opens a new one.
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
  // 0 (default): open a new session (Register RPC) before the first write.
  // Nonzero: resume this session, one that the cluster registered earlier (for
  // example by a clerk of a previous run of this process); no Register is sent.
  // An id the cluster does not know makes writes fail with kFailedPrecondition.
  uint64_t client_id = 0;
  // With a nonzero client_id: the last sequence number that session used
  // (Clerk::last_sequence() of its previous clerk); writes continue after it.
  // Resuming with a number lower than the session's last one makes writes fail
  // (kAlreadyExists) or be answered from the server's cache without being
  // applied. Default 0 (the session has sent no write). Ignored without client_id.
  uint64_t last_sequence = 0;
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

  // The session's id: 0 until the first write registers one (and again after
  // a write found the session expired). Waits for an operation in progress.
  uint64_t client_id() const ABSL_LOCKS_EXCLUDED(mu_);
  // The last sequence number used in the session (0: none yet); with
  // client_id(), what a later clerk needs to resume the session.
  uint64_t last_sequence() const ABSL_LOCKS_EXCLUDED(mu_);
  const std::vector<std::string>& endpoints() const { return options_.endpoints; }

 private:
  explicit Clerk(ClerkOptions options);

  // Runs `attempt(stub, ctx)` against replicas until it succeeds, fails with a
  // final error, or `deadline` passes.
  template <typename Attempt>
  absl::Status WithRetries(const char* op, absl::Time deadline, Attempt attempt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Registers a session unless the clerk has one.
  absl::Status EnsureSession(absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends write `request` (client id and sequence set here) with `call`
  // (stub, ctx, request) -> grpc::Status, registering first if needed.
  template <typename Request, typename Call>
  absl::Status Write(const char* op, Request& request, Call call)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  kv::pb::KvService::Stub* StubFor(size_t endpoint) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ClerkOptions options_;
  mutable absl::Mutex mu_;
  uint64_t client_id_ ABSL_GUARDED_BY(mu_) = 0;  // 0: no session
  // Index into options_.endpoints of the presumed leader.
  size_t leader_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::unique_ptr<kv::pb::KvService::Stub>> stubs_ ABSL_GUARDED_BY(mu_);
};

// The retry rules shared by Clerk and AsyncClerk (client/kv_stream.h).
//
// Errors that another replica or a later attempt cannot fix.
bool IsFinalError(grpc::StatusCode code);
// After an attempt at replica `target` failed: the one to try next, the
// hinted leader if `hint` names a known replica other than `target`, else the
// next in the list.
size_t NextReplica(const std::vector<std::string>& endpoints, size_t target,
                   const std::string& hint);
// Backoff once every replica has failed (a round), so that an election in
// progress is not hammered; hints count too, which bounds a stale-hint loop.
class RetryBackoff {
 public:
  explicit RetryBackoff(const ClerkOptions& options)
      : backoff_(options.initial_backoff), max_(options.max_backoff) {}
  // Called after each failed attempt; the pause before the next attempt
  // (zero until a round of `replicas` failures is complete), jittered +-50%.
  absl::Duration OnFailure(size_t replicas);

 private:
  absl::Duration backoff_;
  const absl::Duration max_;
  size_t failures_this_round_ = 0;
};

// Parses "H:P,H:P,..." into endpoints; kInvalidArgument on an empty list or a
// malformed entry.
absl::StatusOr<std::vector<std::string>> ParseEndpoints(const std::string& list);

}  // namespace ds::client
