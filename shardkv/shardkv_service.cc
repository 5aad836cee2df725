#include "shardkv/shardkv_service.h"

#include <memory>
#include <utility>

#include "absl/time/clock.h"
#include "raft/rsm/requests.h"

namespace ds::shardkv {

void ShardKvBackend::Submit(raft::Rsm& rsm, const rsm::pb::SessionRef& session,
                            const kv::pb::KvCommand& cmd, absl::Time deadline,
                            rsm::ResultCallback done) const {
  pb::ShardKvCommand wrapped;
  *wrapped.mutable_kv() = cmd;
  rsm::SubmitAsync(rsm, &session, wrapped, deadline, std::move(done));
}

absl::StatusOr<kv::pb::KvResult> ShardKvBackend::Read(const rsm::Application& app,
                                                      std::string_view key) const {
  return static_cast<const ShardKvStateMachine&>(app).Get(key);
}

void SubmitInternal(raft::Rsm& rsm, const pb::ShardKvCommand& cmd, absl::Time deadline,
                    std::function<void(absl::Status)> done) {
  rsm::SubmitAsync(rsm, nullptr, cmd, deadline,
                   [done = std::move(done)](absl::StatusOr<std::string> r) { done(r.status()); });
}

void HandleMigrationRequest(const rsm::ReplicaContext& replica, pb::MigrationRequest req,
                            absl::Time deadline, std::function<void(pb::MigrationResponse)> done) {
  done = common::TimedReply(replica.request_metrics(),
                            req.op_case() == pb::MigrationRequest::kPull     ? "pull_shard"
                            : req.op_case() == pb::MigrationRequest::kDelete ? "delete_shard"
                                                                             : "invalid",
                            std::move(done));
  pb::MigrationResponse resp;
  switch (req.op_case()) {
    case pb::MigrationRequest::kPull: {
      auto result = std::make_shared<absl::StatusOr<pb::PullShardResponse>>();
      rsm::ReadStateAsync(
          replica.rsm(), deadline,
          [result, pull = std::move(*req.mutable_pull())](const rsm::SessionStateMachine& sm) {
            *result = static_cast<const ShardKvStateMachine&>(sm.app()).Pull(pull, sm.sessions());
          },
          [&replica, result, resp = std::move(resp),
           done = std::move(done)](absl::Status s) mutable {
            if (s.ok() && !result->ok()) s = result->status();
            if (s.ok()) *resp.mutable_pull() = std::move(**result);
            replica.FillReply(s, resp.mutable_status());
            done(std::move(resp));
          });
      return;
    }
    case pb::MigrationRequest::kDelete: {
      pb::ShardKvCommand cmd;
      cmd.mutable_delete_shard()->set_config_num(req.delete_().config_num());
      cmd.mutable_delete_shard()->set_shard(req.delete_().shard());
      SubmitInternal(
          replica.rsm(), cmd, deadline,
          [&replica, resp = std::move(resp), done = std::move(done)](absl::Status s) mutable {
            if (s.ok()) resp.mutable_delete_();
            replica.FillReply(s, resp.mutable_status());
            done(std::move(resp));
          });
      return;
    }
    default:
      replica.FillReply(absl::InvalidArgumentError("request without an operation"),
                        resp.mutable_status());
      done(std::move(resp));
  }
}

MigrationServiceImpl::MigrationServiceImpl(
    const rsm::ReplicaContext* replica,
    std::function<grpc::Status(const grpc::ServerContextBase&)> authorize)
    : replica_(replica),
      authorize_(std::move(authorize)),
      handler_([this](pb::MigrationRequest req, absl::Time deadline,
                      std::function<void(pb::MigrationResponse)> done) {
        HandleMigrationRequest(*replica_, std::move(req), deadline, std::move(done));
      }) {}

grpc::ServerUnaryReactor* MigrationServiceImpl::Refuse(grpc::CallbackServerContext* ctx) {
  if (!authorize_) return nullptr;
  grpc::Status st = authorize_(*ctx);
  if (st.ok()) return nullptr;
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(st);
  return r;
}

grpc::ServerUnaryReactor* MigrationServiceImpl::PullShard(grpc::CallbackServerContext* ctx,
                                                          const pb::PullShardRequest* req,
                                                          pb::PullShardResponse* resp) {
  if (grpc::ServerUnaryReactor* refused = Refuse(ctx)) return refused;
  return rsm::ServeUnary(*replica_, ctx, req, resp, &pb::MigrationRequest::mutable_pull,
                         &pb::MigrationResponse::mutable_pull, handler_);
}

grpc::ServerUnaryReactor* MigrationServiceImpl::DeleteShard(grpc::CallbackServerContext* ctx,
                                                            const pb::DeleteShardRequest* req,
                                                            pb::DeleteShardResponse* resp) {
  if (grpc::ServerUnaryReactor* refused = Refuse(ctx)) return refused;
  return rsm::ServeUnary(*replica_, ctx, req, resp, &pb::MigrationRequest::mutable_delete_,
                         &pb::MigrationResponse::mutable_delete_, handler_);
}

}  // namespace ds::shardkv
