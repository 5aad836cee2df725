#include "raft/service/replica_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "raft/rsm/requests.h"
#include "raft/rsm/session_state_machine.h"

namespace ds::rsm {

absl::Time ReplicaContext::Deadline(absl::Time client_deadline) const {
  return std::min(client_deadline, absl::Now() + options_.request_timeout);
}

absl::Time ReplicaContext::CallDeadline(const grpc::CallbackServerContext* ctx) const {
  return Deadline(absl::FromChrono(ctx->deadline()));
}

std::string ReplicaContext::Address(uint64_t id) const {
  auto it = options_.addresses.find(id);
  return it == options_.addresses.end() ? "" : it->second;
}

void ReplicaContext::FillReply(const absl::Status& status, pb::ReplyStatus* reply) const {
  reply->set_code(static_cast<int>(status.code()));
  if (status.ok()) return;
  reply->set_message(std::string(status.message()));
  if (status.code() == absl::StatusCode::kUnavailable) {
    const uint64_t leader = raft::LeaderHint(status);
    if (leader != 0) {
      reply->set_leader_id(leader);
      reply->set_leader_address(Address(leader));
    }
    reply->set_not_applied(NotApplied(status));
  } else if (status.code() == absl::StatusCode::kAborted) {
    reply->set_session_watermark_unix_micros(SessionWatermark(status));
  }
}

void ReplicaContext::FillHeader(pb::ResponseHeader* header) const {
  raft::NodeStatus st = rsm_->status();
  header->set_member_id(st.id);
  header->set_term(st.term);
  header->set_applied_index(st.applied);
}

pb::Role ToProto(raft::Role role) {
  switch (role) {
    case raft::Role::kFollower:
      return pb::ROLE_FOLLOWER;
    case raft::Role::kPreCandidate:
      return pb::ROLE_PRE_CANDIDATE;
    case raft::Role::kCandidate:
      return pb::ROLE_CANDIDATE;
    case raft::Role::kLeader:
      return pb::ROLE_LEADER;
  }
  return pb::ROLE_UNKNOWN;
}

void FinishUnary(grpc::CallbackServerContext* ctx, grpc::ServerUnaryReactor* reactor,
                 const pb::ReplyStatus& reply) {
  if (reply.code() == 0) {
    reactor->Finish(grpc::Status::OK);
    return;
  }
  std::string message = reply.message();
  if (reply.leader_id() != 0) {
    ctx->AddTrailingMetadata("ds-leader-id", std::to_string(reply.leader_id()));
    if (!reply.leader_address().empty()) {
      ctx->AddTrailingMetadata("ds-leader-address", reply.leader_address());
    }
    absl::StrAppend(&message, "; leader is ", reply.leader_id());
  }
  if (reply.not_applied()) ctx->AddTrailingMetadata("ds-not-applied", "1");
  if (reply.session_watermark_unix_micros() != 0) {
    ctx->AddTrailingMetadata("ds-session-watermark",
                             std::to_string(reply.session_watermark_unix_micros()));
  }
  reactor->Finish(grpc::Status(static_cast<grpc::StatusCode>(reply.code()), message));
}

void FinishUnary(const ReplicaContext& replica, grpc::CallbackServerContext* ctx,
                 grpc::ServerUnaryReactor* reactor, const absl::Status& status) {
  pb::ReplyStatus reply;
  replica.FillReply(status, &reply);
  FinishUnary(ctx, reactor, reply);
}

grpc::ServerUnaryReactor* ReplicaServiceImpl::Status(grpc::CallbackServerContext* ctx,
                                                     const pb::StatusRequest*,
                                                     pb::StatusResponse* resp) {
  raft::NodeStatus st = replica_->rsm().status();
  resp->set_id(st.id);
  resp->set_role(ToProto(st.role));
  resp->set_term(st.term);
  resp->set_leader_id(st.leader);
  resp->set_leader_address(replica_->Address(st.leader));
  resp->set_commit_index(st.commit);
  resp->set_applied_index(st.applied);
  resp->set_log_bytes(st.log_bytes);
  resp->set_snapshot_index(st.snapshot_index);
  resp->set_snapshot_bytes(st.snapshot_bytes);
  resp->set_raft_loops(st.loops);
  resp->set_raft_saves(st.saves);
  resp->set_raft_fsyncs(st.synced_saves);
  resp->set_sessions(replica_->state_machine().session_count());
  resp->set_service(replica_->options().name);
  if (replica_->options().status_extra) replica_->options().status_extra(resp);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* ReplicaServiceImpl::Register(grpc::CallbackServerContext* ctx,
                                                       const pb::RegisterRequest* req,
                                                       pb::RegisterResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  const pb::SessionRef& s = req->session();
  if (s.client_id() == 0 || s.created_unix_micros() <= 0) {
    FinishUnary(*replica_, ctx, reactor,
                absl::InvalidArgumentError("register needs a nonzero client id and creation time"));
    return reactor;
  }
  std::function<void(absl::Status)> done = [this, ctx, reactor, resp](absl::Status st) {
    if (st.ok()) replica_->FillHeader(resp->mutable_header());
    FinishUnary(*replica_, ctx, reactor, st);
  };
  OpenSessionAsync(replica_->rsm(), s, replica_->CallDeadline(ctx),
                   common::TimedReply(replica_->request_metrics(), "register", std::move(done)));
  return reactor;
}

}  // namespace ds::rsm
