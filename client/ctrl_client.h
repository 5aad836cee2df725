// The shard controller's clients, on the one client engine of the replicated
// services (client/replica_client.h: leader search, hints, retries, sessions).
// - CtrlClient: asynchronous, over any CtrlTransport (gRPC, or the in-process
//   test network); one operation at a time per client.
// - CtrlClerk: blocking, over unary gRPC calls; what kvctl ctrl and the
//   shardkv servers use.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "client/clerk.h"
#include "client/replica_client.h"
#include "proto/shardctrler.grpc.pb.h"

namespace ds::client {

class CtrlTransport : public ReplicaTransport {
 public:
  // Sends `request` to replica `i`; `done` runs exactly once, on any thread,
  // possibly inline, with the response (a failure of the transport itself as
  // a response whose status is UNAVAILABLE or DEADLINE_EXCEEDED).
  virtual void Send(size_t i, ctrl::pb::CtrlRequest request, absl::Time deadline,
                    std::function<void(ctrl::pb::CtrlResponse)> done) = 0;
};

// gid -> servers ("host:port"), the groups of one Join.
using GroupServers = std::map<uint64_t, std::vector<std::string>>;

class CtrlClient {
 public:
  // `transport` must outlive the client and its operations.
  CtrlClient(CtrlTransport* transport, std::shared_ptr<LeaderCache> leader, RetryOptions options,
             SessionState resume = {});

  // Join, Leave and Move return the number of the configuration they made.
  void Join(GroupServers groups, std::function<void(absl::StatusOr<uint64_t>)> done);
  void Leave(std::vector<uint64_t> gids, std::function<void(absl::StatusOr<uint64_t>)> done);
  void Move(uint32_t shard, uint64_t gid, std::function<void(absl::StatusOr<uint64_t>)> done);
  // Replaces the servers of group `gid`; the number of the configuration
  // that lists them (the latest, if they were the list already).
  void Servers(uint64_t gid, std::vector<std::string> servers,
               std::function<void(absl::StatusOr<uint64_t>)> done);
  // Configuration `num`; num < 0 or past the latest: the latest.
  void Query(int64_t num, std::function<void(absl::StatusOr<ctrl::pb::Config>)> done);
  // The latest configuration's number (the cheap poll).
  void Latest(std::function<void(absl::StatusOr<uint64_t>)> done);

  SessionState session() const { return session_.state(); }

 private:
  using ResponseFn = std::function<void(absl::StatusOr<ctrl::pb::CtrlResponse>)>;
  void Write(const char* name, ctrl::pb::CtrlRequest request, ResponseFn done);
  void Read(const char* name, ctrl::pb::CtrlRequest request, ResponseFn done);

  CtrlTransport* const transport_;
  const std::shared_ptr<LeaderCache> leader_;
  const RetryOptions options_;
  ClientSession session_;
};

// Unary ShardCtrler calls over one channel per replica (the callback API).
class GrpcCtrlTransport final : public UnaryTransport<CtrlTransport, ctrl::pb::ShardCtrler> {
 public:
  using UnaryTransport::UnaryTransport;
  void Send(size_t i, ctrl::pb::CtrlRequest request, absl::Time deadline,
            std::function<void(ctrl::pb::CtrlResponse)> done) override;
};

class CtrlClerk {
 public:
  // options.endpoints: the controller replicas. kInvalidArgument for a bad
  // endpoint list or timeouts.
  static absl::StatusOr<std::unique_ptr<CtrlClerk>> Create(ClerkOptions options);
  ~CtrlClerk();

  absl::StatusOr<uint64_t> Join(GroupServers groups);
  absl::StatusOr<uint64_t> Leave(std::vector<uint64_t> gids);
  absl::StatusOr<uint64_t> Move(uint32_t shard, uint64_t gid);
  absl::StatusOr<uint64_t> Servers(uint64_t gid, std::vector<std::string> servers);
  absl::StatusOr<ctrl::pb::Config> Query(int64_t num = -1);
  absl::StatusOr<uint64_t> Latest();

  const std::vector<std::string>& endpoints() const { return options_.endpoints; }

 private:
  explicit CtrlClerk(ClerkOptions options);

  const ClerkOptions options_;
  std::unique_ptr<GrpcCtrlTransport> transport_;
  std::unique_ptr<CtrlClient> client_;
  OneOperationAtATime turns_;  // one operation at a time
};

}  // namespace ds::client
