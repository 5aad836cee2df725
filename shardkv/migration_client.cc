#include "shardkv/migration_client.h"

#include <utility>

namespace ds::shardkv {

absl::StatusOr<pb::MigrationResponse> MigrationClient::Call(const char* name,
                                                            pb::MigrationRequest request) {
  return client::Await<absl::StatusOr<pb::MigrationResponse>>([&](auto cb) {
    client::TypedCall<MigrationTransport, pb::MigrationRequest, pb::MigrationResponse>::Start(
        transport_, leader_, options_, name, nullptr, nullptr, std::move(request), std::move(cb));
  });
}

absl::StatusOr<pb::PullShardResponse> MigrationClient::Pull(const pb::PullShardRequest& request) {
  pb::MigrationRequest req;
  *req.mutable_pull() = request;
  auto r = Call("pull", std::move(req));
  if (!r.ok()) return r.status();
  return std::move(*r->mutable_pull());
}

absl::Status MigrationClient::Delete(const pb::DeleteShardRequest& request) {
  pb::MigrationRequest req;
  *req.mutable_delete_() = request;
  return Call("delete", std::move(req)).status();
}

class GrpcPeerGroups::Transport final
    : public client::UnaryTransport<MigrationTransport, pb::ShardMigration> {
 public:
  using UnaryTransport::UnaryTransport;

  void Send(size_t i, pb::MigrationRequest req, absl::Time deadline,
            std::function<void(pb::MigrationResponse)> done) override {
    auto call = std::make_shared<std::pair<pb::MigrationRequest, pb::MigrationResponse>>(
        std::move(req), pb::MigrationResponse());
    auto* stub = this->stub(i)->async();
    grpc().Call(
        deadline,
        [stub, call](grpc::ClientContext* ctx, std::function<void(grpc::Status)> finish) {
          pb::MigrationRequest& r = call->first;
          pb::MigrationResponse& resp = call->second;
          if (r.has_pull()) {
            return stub->PullShard(ctx, &r.pull(), resp.mutable_pull(), std::move(finish));
          }
          stub->DeleteShard(ctx, &r.delete_(), resp.mutable_delete_(), std::move(finish));
        },
        [call, done = std::move(done)](rsm::pb::ReplyStatus status) {
          *call->second.mutable_status() = std::move(status);
          done(std::move(call->second));
        });
  }
};

struct GrpcPeerGroups::Group {
  Group(const client::ClerkOptions& o, client::RetryOptions retry)
      : transport(o), client(&transport, retry) {}
  Transport transport;
  MigrationClient client;
};

GrpcPeerGroups::GrpcPeerGroups(client::RetryOptions options,
                               std::shared_ptr<grpc::ChannelCredentials> credentials)
    : options_(options), credentials_(std::move(credentials)) {}

GrpcPeerGroups::~GrpcPeerGroups() = default;

absl::StatusOr<MigrationClient*> GrpcPeerGroups::For(const std::vector<std::string>& servers) {
  absl::MutexLock lock(&mu_);
  auto it = groups_.find(servers);
  if (it == groups_.end()) {
    client::ClerkOptions o;
    o.endpoints = servers;
    o.operation_timeout = options_.operation_timeout;
    o.attempt_timeout = options_.attempt_timeout;
    o.credentials = credentials_;
    if (absl::Status st = client::ValidateClerkOptions(o); !st.ok()) return st;
    it = groups_.emplace(servers, std::make_unique<Group>(o, options_)).first;
  }
  return &it->second->client;
}

absl::StatusOr<pb::PullShardResponse> GrpcPeerGroups::Pull(const std::vector<std::string>& servers,
                                                           const pb::PullShardRequest& request) {
  auto c = For(servers);
  if (!c.ok()) return c.status();
  return (*c)->Pull(request);
}

absl::Status GrpcPeerGroups::Delete(const std::vector<std::string>& servers,
                                    const pb::DeleteShardRequest& request) {
  auto c = For(servers);
  if (!c.ok()) return c.status();
  return (*c)->Delete(request);
}

}  // namespace ds::shardkv
