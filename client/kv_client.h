// KvClient: one client session of the KV-Raft service over any KvTransport,
// on the generic engine of client/replica_client.h (leader search, retries,
// back-off, sessions). Asynchronous: calls complete through callbacks on the
// transport's threads; one operation at a time per client.
//
// The transports: unary gRPC calls (Clerk, client/clerk.h), Batch streams
// (AsyncClerk, client/kv_stream.h) and the in-process test network
// (tests/kvraft/lab3_harness.h).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/replica_client.h"
#include "proto/kv.pb.h"

namespace ds::client {

class KvTransport : public ReplicaTransport {
 public:
  // Sends `request` to replica `i`. `done` runs exactly once, on any thread,
  // possibly inline, with the response; a failure of the transport itself
  // (connection lost, no answer by `deadline`) comes as a response whose
  // status is UNAVAILABLE or DEADLINE_EXCEEDED.
  virtual void Send(size_t i, kv::pb::KvRequest request, absl::Time deadline,
                    std::function<void(kv::pb::KvResponse)> done) = 0;
};

struct GetResult {
  bool found = false;
  std::string value;  // "" when !found
};

// Writes carry the session's reference: the stamp of a KV write's TypedCall.
void StampKv(kv::pb::KvRequest& request, const rsm::pb::SessionRef& ref);

// Get, Put, Append and Delete as KV requests, for a client (KvClient,
// ShardedKvClient) that sends one with Derived::Run(name, request, write,
// done(StatusOr<KvResponse>)); writes go under the client's session.
template <typename Derived>
class KvOperations {
 public:
  using ResponseCallback = std::function<void(absl::StatusOr<kv::pb::KvResponse>)>;

  // Linearizable read; needs no session. A missing key is found = false.
  void Get(std::string key, std::function<void(absl::StatusOr<GetResult>)> done) {
    kv::pb::KvRequest req;
    req.mutable_get()->set_key(std::move(key));
    self().Run("get", std::move(req), false,
               [done = std::move(done)](absl::StatusOr<kv::pb::KvResponse> r) {
                 if (!r.ok()) return done(r.status());
                 done(GetResult{r->get().found(), std::move(*r->mutable_get()->mutable_value())});
               });
  }
  void Put(std::string key, std::string value, std::function<void(absl::Status)> done) {
    kv::pb::KvRequest req;
    req.mutable_put()->set_key(std::move(key));
    req.mutable_put()->set_value(std::move(value));
    self().Run(
        "put", std::move(req), true,
        [done = std::move(done)](absl::StatusOr<kv::pb::KvResponse> r) { done(r.status()); });
  }
  // A missing key counts as "".
  void Append(std::string key, std::string value, std::function<void(absl::Status)> done) {
    kv::pb::KvRequest req;
    req.mutable_append()->set_key(std::move(key));
    req.mutable_append()->set_value(std::move(value));
    self().Run(
        "append", std::move(req), true,
        [done = std::move(done)](absl::StatusOr<kv::pb::KvResponse> r) { done(r.status()); });
  }
  // Whether the key existed.
  void Delete(std::string key, std::function<void(absl::StatusOr<bool>)> done) {
    kv::pb::KvRequest req;
    req.mutable_delete_()->set_key(std::move(key));
    self().Run("del", std::move(req), true,
               [done = std::move(done)](absl::StatusOr<kv::pb::KvResponse> r) {
                 if (!r.ok()) return done(r.status());
                 done(r->delete_().found());
               });
  }

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
};

class KvClient : public KvOperations<KvClient> {
 public:
  // `transport` must outlive the client and its operations; `leader` may be
  // shared with other clients of the same replicas. `resume`: continue a
  // session of an earlier client (client_id 0: start a new one).
  KvClient(KvTransport* transport, std::shared_ptr<LeaderCache> leader, RetryOptions options,
           SessionState resume = {});

  SessionState session() const { return session_.state(); }
  const RetryOptions& options() const { return options_; }

 private:
  friend class KvOperations<KvClient>;
  // One operation; writes go under the client's session.
  void Run(const char* name, kv::pb::KvRequest request, bool write, ResponseCallback done);

  KvTransport* const transport_;
  const std::shared_ptr<LeaderCache> leader_;
  const RetryOptions options_;
  ClientSession session_;
};

}  // namespace ds::client
