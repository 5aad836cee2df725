#include "kvraft/kv_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace ds::kv {

absl::StatusOr<std::string> KvReplicatedStateMachine::Apply(const std::string& command,
                                                            uint64_t index) {
  absl::StatusOr<pb::KvResult> r = kv_.Apply(command, index);
  if (!r.ok()) return r.status();
  return r->SerializeAsString();
}

namespace {
absl::Status NotLeaderHere(const raft::NodeStatus& st, uint64_t* leader_hint) {
  if (leader_hint != nullptr) *leader_hint = st.leader;
  return absl::UnavailableError("not the leader");
}
}  // namespace

absl::StatusOr<pb::KvResult> SubmitKvWrite(raft::Rsm& rsm, pb::KvCommand cmd,
                                           absl::Duration timeout, uint64_t* leader_hint) {
  raft::NodeStatus st = rsm.status();
  if (st.role != raft::Role::kLeader) return NotLeaderHere(st, leader_hint);
  cmd.set_proposal_time_unix_micros(absl::ToUnixMicros(absl::Now()));
  absl::StatusOr<std::string> r = rsm.Submit(cmd.SerializeAsString(), timeout);
  if (!r.ok()) {
    if (leader_hint != nullptr) *leader_hint = raft::LeaderHint(r.status());
    return r.status();
  }
  pb::KvResult result;
  if (!result.ParseFromString(*r))
    return absl::InternalError("unreadable result from the state machine");
  return result;
}

absl::StatusOr<pb::KvResult> ReadKv(raft::Rsm& rsm, const std::string& key, absl::Duration timeout,
                                    uint64_t* leader_hint) {
  // Only the leader can find a read point; answer a follower's client at once
  // instead of letting the read time out.
  raft::NodeStatus st = rsm.status();
  if (st.role != raft::Role::kLeader) return NotLeaderHere(st, leader_hint);
  pb::KvResult result;
  absl::Status s = rsm.Read(timeout, [&](const raft::StateMachine& sm) {
    result = static_cast<const KvReplicatedStateMachine&>(sm).kv().Get(key);
  });
  if (!s.ok()) {
    if (leader_hint != nullptr) *leader_hint = raft::LeaderHint(s);
    return s;
  }
  return result;
}

absl::Duration KvServiceImpl::Timeout(const grpc::ServerContext* ctx) const {
  absl::Duration client = absl::FromChrono(ctx->deadline()) - absl::Now();
  return std::max(absl::ZeroDuration(), std::min(client, options_.request_timeout));
}

void KvServiceImpl::FillHeader(pb::ResponseHeader* header) const {
  raft::NodeStatus st = rsm_->status();
  header->set_member_id(st.id);
  header->set_term(st.term);
  header->set_applied_index(st.applied);
}

grpc::Status KvServiceImpl::NotLeader(grpc::ServerContext* ctx, uint64_t leader,
                                      const std::string& why) {
  if (leader != 0) {
    ctx->AddTrailingMetadata("ds-leader-id", std::to_string(leader));
    auto it = options_.addresses.find(leader);
    if (it != options_.addresses.end()) ctx->AddTrailingMetadata("ds-leader-address", it->second);
  }
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      leader != 0 ? absl::StrCat(why, "; leader is ", leader) : why);
}

grpc::Status KvServiceImpl::ToGrpc(grpc::ServerContext* ctx, const absl::Status& st,
                                   uint64_t leader_hint) {
  if (st.code() == absl::StatusCode::kUnavailable) {
    return NotLeader(ctx, leader_hint, std::string(st.message()));
  }
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

grpc::Status KvServiceImpl::Write(grpc::ServerContext* ctx, pb::KvCommand cmd,
                                  pb::ResponseHeader* header, pb::KvResult* result) {
  if (cmd.key().empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty key");
  const uint64_t size = cmd.key().size() + cmd.value().size();
  if (size > options_.max_request_bytes) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("request of ", size, " bytes exceeds the limit of ",
                                     options_.max_request_bytes, " bytes (--max_request_bytes)"));
  }
  if (cmd.client_id() == 0 || cmd.sequence() == 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "writes need a nonzero client_id and sequence");
  }
  uint64_t hint = 0;
  absl::StatusOr<pb::KvResult> r = SubmitKvWrite(*rsm_, std::move(cmd), Timeout(ctx), &hint);
  if (!r.ok()) return ToGrpc(ctx, r.status(), hint);
  if (result != nullptr) *result = std::move(*r);
  FillHeader(header);
  return grpc::Status::OK;
}

grpc::Status KvServiceImpl::Get(grpc::ServerContext* ctx, const pb::GetRequest* req,
                                pb::GetResponse* resp) {
  if (req->key().empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty key");
  uint64_t hint = 0;
  absl::StatusOr<pb::KvResult> r = ReadKv(*rsm_, req->key(), Timeout(ctx), &hint);
  if (!r.ok()) return ToGrpc(ctx, r.status(), hint);
  resp->set_found(r->found());
  resp->set_value(r->value());
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status KvServiceImpl::Put(grpc::ServerContext* ctx, const pb::PutRequest* req,
                                pb::PutResponse* resp) {
  pb::KvCommand cmd;
  cmd.set_op(pb::OP_PUT);
  cmd.set_key(req->key());
  cmd.set_value(req->value());
  cmd.set_client_id(req->client_id());
  cmd.set_sequence(req->sequence());
  return Write(ctx, std::move(cmd), resp->mutable_header(), nullptr);
}

grpc::Status KvServiceImpl::Append(grpc::ServerContext* ctx, const pb::AppendRequest* req,
                                   pb::AppendResponse* resp) {
  pb::KvCommand cmd;
  cmd.set_op(pb::OP_APPEND);
  cmd.set_key(req->key());
  cmd.set_value(req->value());
  cmd.set_client_id(req->client_id());
  cmd.set_sequence(req->sequence());
  return Write(ctx, std::move(cmd), resp->mutable_header(), nullptr);
}

grpc::Status KvServiceImpl::Delete(grpc::ServerContext* ctx, const pb::DeleteRequest* req,
                                   pb::DeleteResponse* resp) {
  pb::KvCommand cmd;
  cmd.set_op(pb::OP_DELETE);
  cmd.set_key(req->key());
  cmd.set_client_id(req->client_id());
  cmd.set_sequence(req->sequence());
  pb::KvResult result;
  grpc::Status s = Write(ctx, std::move(cmd), resp->mutable_header(), &result);
  if (s.ok()) resp->set_found(result.found());
  return s;
}

grpc::Status KvServiceImpl::Status(grpc::ServerContext*, const pb::StatusRequest*,
                                   pb::StatusResponse* resp) {
  raft::NodeStatus st = rsm_->status();
  resp->set_id(st.id);
  switch (st.role) {
    case raft::Role::kFollower:
      resp->set_role(pb::ROLE_FOLLOWER);
      break;
    case raft::Role::kPreCandidate:
      resp->set_role(pb::ROLE_PRE_CANDIDATE);
      break;
    case raft::Role::kCandidate:
      resp->set_role(pb::ROLE_CANDIDATE);
      break;
    case raft::Role::kLeader:
      resp->set_role(pb::ROLE_LEADER);
      break;
  }
  resp->set_term(st.term);
  resp->set_leader_id(st.leader);
  auto it = options_.addresses.find(st.leader);
  if (it != options_.addresses.end()) resp->set_leader_address(it->second);
  resp->set_commit_index(st.commit);
  resp->set_applied_index(st.applied);
  resp->set_log_bytes(st.log_bytes);
  resp->set_snapshot_index(st.snapshot_index);
  resp->set_snapshot_bytes(st.snapshot_bytes);
  return grpc::Status::OK;
}

}  // namespace ds::kv
