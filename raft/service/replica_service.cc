#include "raft/service/replica_service.h"

#include <algorithm>
#include <map>

#include "absl/strings/numbers.h"
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
  if (it != options_.addresses.end()) return it->second;
  if (!options_.raft_address_serves_clients) return "";  // a Raft-only port
  // A member added since start: its address in the Raft configuration.
  raft::NodeStatus st = rsm_->status();
  if (st.conf == nullptr) return "";
  auto a = st.conf->addresses().find(id);
  return a == st.conf->addresses().end() ? "" : a->second;
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
  if (st.conf != nullptr && std::find(st.conf->learners().begin(), st.conf->learners().end(),
                                      st.id) != st.conf->learners().end()) {
    resp->set_role(pb::ROLE_LEARNER);
  }
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

namespace {

void FillMembers(const raft::pb::ConfState& conf,
                 google::protobuf::RepeatedPtrField<pb::Member>* out) {
  std::map<uint64_t, bool> ids;  // id -> learner
  for (uint64_t v : conf.voters()) ids[v] = false;
  for (uint64_t l : conf.learners()) ids[l] = true;
  for (const auto& [id, learner] : ids) {
    pb::Member* m = out->Add();
    m->set_id(id);
    auto a = conf.addresses().find(id);
    if (a != conf.addresses().end()) m->set_address(a->second);
    m->set_learner(learner);
  }
}

// A HOST:PORT with a non-empty host and a port in 1..65535.
bool ValidAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  uint32_t port = 0;
  return absl::SimpleAtoi(address.substr(colon + 1), &port) && port > 0 && port < 65536;
}

}  // namespace

grpc::ServerUnaryReactor* ReplicaServiceImpl::MemberList(grpc::CallbackServerContext* ctx,
                                                         const pb::MemberListRequest*,
                                                         pb::MemberListResponse* resp) {
  raft::NodeStatus st = replica_->rsm().status();
  replica_->FillHeader(resp->mutable_header());
  if (st.conf != nullptr) FillMembers(*st.conf, resp->mutable_members());
  resp->set_leader_id(st.leader);
  resp->set_conf_committed(st.conf_committed);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* ReplicaServiceImpl::ChangeMembers(grpc::CallbackServerContext* ctx,
                                                            raft::pb::ConfChange change,
                                                            pb::MemberChangeResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (change.node_id() == 0) {
    FinishUnary(*replica_, ctx, reactor, absl::InvalidArgumentError("member id 0 is not valid"));
    return reactor;
  }
  const bool add =
      change.type() == raft::pb::CONF_ADD_VOTER || change.type() == raft::pb::CONF_ADD_LEARNER;
  if (add && !ValidAddress(change.address())) {
    FinishUnary(*replica_, ctx, reactor,
                absl::InvalidArgumentError(
                    absl::StrCat("address \"", change.address(), "\" of member ", change.node_id(),
                                 " is not HOST:PORT (the address its peers reach it at)")));
    return reactor;
  }
  const ReplicaContext* replica = replica_;
  replica_->rsm().ChangeMembershipAsync(
      std::move(change), replica_->CallDeadline(ctx),
      [replica, ctx, reactor, resp](absl::StatusOr<std::string> r) {
        if (r.ok()) {
          replica->FillHeader(resp->mutable_header());
          raft::NodeStatus st = replica->rsm().status();
          if (st.conf != nullptr) FillMembers(*st.conf, resp->mutable_members());
        }
        FinishUnary(*replica, ctx, reactor, r.status());
      });
  return reactor;
}

grpc::ServerUnaryReactor* ReplicaServiceImpl::MemberAdd(grpc::CallbackServerContext* ctx,
                                                        const pb::MemberAddRequest* req,
                                                        pb::MemberChangeResponse* resp) {
  raft::pb::ConfChange cc;
  cc.set_type(req->learner() ? raft::pb::CONF_ADD_LEARNER : raft::pb::CONF_ADD_VOTER);
  cc.set_node_id(req->id());
  cc.set_address(req->address());
  return ChangeMembers(ctx, std::move(cc), resp);
}

grpc::ServerUnaryReactor* ReplicaServiceImpl::MemberPromote(grpc::CallbackServerContext* ctx,
                                                            const pb::MemberPromoteRequest* req,
                                                            pb::MemberChangeResponse* resp) {
  raft::pb::ConfChange cc;
  cc.set_type(raft::pb::CONF_PROMOTE);
  cc.set_node_id(req->id());
  return ChangeMembers(ctx, std::move(cc), resp);
}

grpc::ServerUnaryReactor* ReplicaServiceImpl::MemberRemove(grpc::CallbackServerContext* ctx,
                                                           const pb::MemberRemoveRequest* req,
                                                           pb::MemberChangeResponse* resp) {
  raft::pb::ConfChange cc;
  cc.set_type(raft::pb::CONF_REMOVE);
  cc.set_node_id(req->id());
  return ChangeMembers(ctx, std::move(cc), resp);
}

}  // namespace ds::rsm
