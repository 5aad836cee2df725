// How a shardkv group reaches another one (pull a shard, delete a handed-off
// shard), on the one client engine (client/replica_client.h): leader search,
// hints, retries until the deadline. PeerGroups is what the driver uses;
// GrpcPeerGroups is the production one (one clerk per group, by its servers).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "client/clerk.h"
#include "client/replica_client.h"
#include "proto/shardkv.grpc.pb.h"

namespace ds::shardkv {

class MigrationTransport : public client::ReplicaTransport {
 public:
  virtual void Send(size_t i, pb::MigrationRequest request, absl::Time deadline,
                    std::function<void(pb::MigrationResponse)> done) = 0;
};

// Blocking calls to one group over `transport` (no session: both calls are
// idempotent). Thread-safe.
class MigrationClient {
 public:
  MigrationClient(MigrationTransport* transport, client::RetryOptions options)
      : transport_(transport),
        leader_(std::make_shared<client::LeaderCache>(transport->endpoints())),
        options_(options) {}

  absl::StatusOr<pb::PullShardResponse> Pull(const pb::PullShardRequest& request);
  absl::Status Delete(const pb::DeleteShardRequest& request);

 private:
  absl::StatusOr<pb::MigrationResponse> Call(const char* name, pb::MigrationRequest request);

  MigrationTransport* const transport_;
  const std::shared_ptr<client::LeaderCache> leader_;
  const client::RetryOptions options_;
};

// The other groups, as the driver sees them: by their servers, as a
// configuration lists them.
class PeerGroups {
 public:
  virtual ~PeerGroups() = default;
  virtual absl::StatusOr<pb::PullShardResponse> Pull(const std::vector<std::string>& servers,
                                                     const pb::PullShardRequest& request) = 0;
  virtual absl::Status Delete(const std::vector<std::string>& servers,
                              const pb::DeleteShardRequest& request) = 0;
};

// Over gRPC: one MigrationClient (and its connections) per server list.
class GrpcPeerGroups final : public PeerGroups {
 public:
  // `credentials`: TLS to the other groups (null: plaintext).
  explicit GrpcPeerGroups(client::RetryOptions options,
                          std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);
  ~GrpcPeerGroups() override;

  absl::StatusOr<pb::PullShardResponse> Pull(const std::vector<std::string>& servers,
                                             const pb::PullShardRequest& request) override;
  absl::Status Delete(const std::vector<std::string>& servers,
                      const pb::DeleteShardRequest& request) override;

 private:
  class Transport;
  struct Group;
  absl::StatusOr<MigrationClient*> For(const std::vector<std::string>& servers);

  const client::RetryOptions options_;
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Group>> groups_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ds::shardkv
