#include "shardctrler/ctrl_service.h"

#include <memory>
#include <utility>

#include "raft/rsm/requests.h"

namespace ds::ctrl {
namespace {

// Proposes a configuration-making command and answers with the number of the
// configuration it made.
template <typename Response>
void Submit(const rsm::ReplicaContext& replica, const rsm::pb::SessionRef& session,
            pb::CtrlCommand cmd, absl::Time deadline, pb::CtrlResponse resp,
            Response* (pb::CtrlResponse::*mutable_result)(),
            std::function<void(pb::CtrlResponse)> done) {
  if (session.client_id() == 0 || session.sequence() == 0 || session.created_unix_micros() <= 0) {
    replica.FillReply(
        absl::InvalidArgumentError("join, leave, move and servers need a session: nonzero "
                                   "client_id, created_unix_micros and sequence"),
        resp.mutable_status());
    return done(std::move(resp));
  }
  rsm::SubmitAsync(replica.rsm(), &session, cmd, deadline,
                   [&replica, resp = std::move(resp), mutable_result,
                    done = std::move(done)](absl::StatusOr<std::string> r) mutable {
                     if (r.ok()) {
                       pb::CtrlResult result;
                       result.ParseFromString(*r);  // CtrlStateMachine's bytes
                       Response* out = (resp.*mutable_result)();
                       out->set_num(result.num());
                       replica.FillHeader(out->mutable_header());
                     }
                     replica.FillReply(r.status(), resp.mutable_status());
                     done(std::move(resp));
                   });
}

// The label of dstack_request_duration_seconds.
std::string_view OpName(const pb::CtrlRequest& req) {
  switch (req.op_case()) {
    case pb::CtrlRequest::kJoin:
      return "join";
    case pb::CtrlRequest::kLeave:
      return "leave";
    case pb::CtrlRequest::kMove:
      return "move";
    case pb::CtrlRequest::kQuery:
      return "query";
    case pb::CtrlRequest::kLatest:
      return "latest";
    case pb::CtrlRequest::kServers:
      return "servers";
    default:
      return "invalid";
  }
}

}  // namespace

void HandleCtrlRequest(const rsm::ReplicaContext& replica, const CtrlServiceOptions& options,
                       pb::CtrlRequest req, absl::Time deadline,
                       std::function<void(pb::CtrlResponse)> done) {
  done = common::TimedReply(replica.request_metrics(), OpName(req), std::move(done));
  pb::CtrlResponse resp;
  pb::CtrlCommand cmd;
  cmd.set_shard_count(static_cast<uint32_t>(options.shard_count));
  switch (req.op_case()) {
    case pb::CtrlRequest::kJoin:
      *cmd.mutable_join()->mutable_groups() = std::move(*req.mutable_join()->mutable_groups());
      return Submit(replica, req.join().session(), std::move(cmd), deadline, std::move(resp),
                    &pb::CtrlResponse::mutable_join, std::move(done));
    case pb::CtrlRequest::kLeave:
      *cmd.mutable_leave()->mutable_gids() = std::move(*req.mutable_leave()->mutable_gids());
      return Submit(replica, req.leave().session(), std::move(cmd), deadline, std::move(resp),
                    &pb::CtrlResponse::mutable_leave, std::move(done));
    case pb::CtrlRequest::kMove:
      cmd.mutable_move()->set_shard(req.move().shard());
      cmd.mutable_move()->set_gid(req.move().gid());
      return Submit(replica, req.move().session(), std::move(cmd), deadline, std::move(resp),
                    &pb::CtrlResponse::mutable_move, std::move(done));
    case pb::CtrlRequest::kServers:
      cmd.mutable_servers()->set_gid(req.servers().gid());
      *cmd.mutable_servers()->mutable_servers() =
          std::move(*req.mutable_servers()->mutable_servers());
      return Submit(replica, req.servers().session(), std::move(cmd), deadline, std::move(resp),
                    &pb::CtrlResponse::mutable_servers, std::move(done));
    case pb::CtrlRequest::kQuery:
    case pb::CtrlRequest::kLatest: {
      const bool latest = req.op_case() == pb::CtrlRequest::kLatest;
      const int64_t num = req.query().has_num() ? req.query().num() : -1;
      auto config = std::make_shared<pb::Config>();
      rsm::ReadAsync(
          replica.rsm(), deadline,
          [config, latest, num](const rsm::Application& app) {
            const auto& ctrl = static_cast<const CtrlStateMachine&>(app);
            if (latest) {
              config->set_num(ctrl.latest().num());
            } else {
              *config = ctrl.Query(num);
            }
          },
          [&replica, config, latest, resp = std::move(resp),
           done = std::move(done)](absl::Status s) mutable {
            if (s.ok() && latest) {
              resp.mutable_latest()->set_num(config->num());
              replica.FillHeader(resp.mutable_latest()->mutable_header());
            } else if (s.ok()) {
              *resp.mutable_query()->mutable_config() = std::move(*config);
              replica.FillHeader(resp.mutable_query()->mutable_header());
            }
            replica.FillReply(s, resp.mutable_status());
            done(std::move(resp));
          });
      return;
    }
    default:
      replica.FillReply(absl::InvalidArgumentError("request without an operation"),
                        resp.mutable_status());
      return done(std::move(resp));
  }
}

CtrlServiceImpl::CtrlServiceImpl(CtrlServiceOptions options, const rsm::ReplicaContext* replica)
    : options_(options),
      replica_(replica),
      handler_([this](pb::CtrlRequest req, absl::Time deadline,
                      std::function<void(pb::CtrlResponse)> done) {
        HandleCtrlRequest(*replica_, options_, std::move(req), deadline, std::move(done));
      }) {}

grpc::ServerUnaryReactor* CtrlServiceImpl::Join(grpc::CallbackServerContext* ctx,
                                                const pb::JoinRequest* req,
                                                pb::JoinResponse* resp) {
  return rsm::ServeUnary(*replica_, ctx, req, resp, &pb::CtrlRequest::mutable_join,
                         &pb::CtrlResponse::mutable_join, handler_);
}

grpc::ServerUnaryReactor* CtrlServiceImpl::Leave(grpc::CallbackServerContext* ctx,
                                                 const pb::LeaveRequest* req,
                                                 pb::LeaveResponse* resp) {
  return rsm::ServeUnary(*replica_, ctx, req, resp, &pb::CtrlRequest::mutable_leave,
                         &pb::CtrlResponse::mutable_leave, handler_);
}

grpc::ServerUnaryReactor* CtrlServiceImpl::Move(grpc::CallbackServerContext* ctx,
                                                const pb::MoveRequest* req,
                                                pb::MoveResponse* resp) {
  return rsm::ServeUnary(*replica_, ctx, req, resp, &pb::CtrlRequest::mutable_move,
                         &pb::CtrlResponse::mutable_move, handler_);
}

grpc::ServerUnaryReactor* CtrlServiceImpl::Servers(grpc::CallbackServerContext* ctx,
                                                   const pb::ServersRequest* req,
                                                   pb::ServersResponse* resp) {
  return rsm::ServeUnary(*replica_, ctx, req, resp, &pb::CtrlRequest::mutable_servers,
                         &pb::CtrlResponse::mutable_servers, handler_);
}

grpc::ServerUnaryReactor* CtrlServiceImpl::Query(grpc::CallbackServerContext* ctx,
                                                 const pb::QueryRequest* req,
                                                 pb::QueryResponse* resp) {
  return rsm::ServeUnary(*replica_, ctx, req, resp, &pb::CtrlRequest::mutable_query,
                         &pb::CtrlResponse::mutable_query, handler_);
}

grpc::ServerUnaryReactor* CtrlServiceImpl::Latest(grpc::CallbackServerContext* ctx,
                                                  const pb::LatestRequest* req,
                                                  pb::LatestResponse* resp) {
  return rsm::ServeUnary(*replica_, ctx, req, resp, &pb::CtrlRequest::mutable_latest,
                         &pb::CtrlResponse::mutable_latest, handler_);
}

}  // namespace ds::ctrl
