// The service skeleton every replicated service shares: how a request's
// outcome becomes a reply on the wire (status code, leader hint, session
// watermark; see the error contract in proto/rsm.proto), deadlines, the
// response header, and the Replica service (Status, Register) that every
// replica serves beside its own.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "grpcpp/grpcpp.h"
#include "proto/rsm.grpc.pb.h"
#include "raft/node/node.h"
#include "raft/rsm/rsm.h"
#include "raft/rsm/session_state_machine.h"

namespace ds::rsm {

struct ServiceOptions {
  // Longest a request waits to be applied (or for a read point) when the
  // client's own deadline is later. Default: 5 s.
  absl::Duration request_timeout = absl::Seconds(5);
  // Every replica of the group: id -> client address "host:port", for leader
  // hints.
  std::map<uint64_t, std::string> addresses;
  // Whether a member's Raft address (in the Raft configuration) is also its
  // client address (false with a separate Raft port): members added at run
  // time and absent from `addresses` are then hinted by that address.
  bool raft_address_serves_clients = true;
  // Reported by Status: "kvraft", "shardctrler", "shardkv".
  std::string name;
  // Adds the service's own fields to a Status answer (shardkv: its shards).
  // Called on gRPC's threads: must be thread-safe and quick. Optional.
  std::function<void(pb::StatusResponse*)> status_extra;
  // Request latencies by operation (--metrics-listen; filled in by
  // ReplicaServer). nullptr (default): not measured. Must outlive the context.
  common::RequestMetrics* request_metrics = nullptr;
};

// What a service's handlers need of their replica. Thread-safe.
class ReplicaContext {
 public:
  // `rsm` and `sm` (the state machine it applies to) must outlive the context.
  ReplicaContext(ServiceOptions options, raft::Rsm* rsm, const SessionStateMachine* sm)
      : options_(std::move(options)), rsm_(rsm), sm_(sm) {}

  raft::Rsm& rsm() const { return *rsm_; }
  const SessionStateMachine& state_machine() const { return *sm_; }
  const ServiceOptions& options() const { return options_; }
  // nullptr when metrics are off.
  common::RequestMetrics* request_metrics() const { return options_.request_metrics; }

  // The deadline of a request whose client gave `client_deadline` (or a
  // timeout, for Batch requests): the earlier of it and request_timeout.
  absl::Time Deadline(absl::Time client_deadline) const;
  absl::Time CallDeadline(const grpc::CallbackServerContext* ctx) const;

  // `status` as a reply: code and message, and with kUnavailable the leader
  // hint (id and address), whether nothing was applied, and with kAborted the
  // session watermark.
  void FillReply(const absl::Status& status, pb::ReplyStatus* reply) const;
  void FillHeader(pb::ResponseHeader* header) const;
  // "" if unknown.
  std::string Address(uint64_t id) const;

 private:
  const ServiceOptions options_;
  raft::Rsm* const rsm_;
  const SessionStateMachine* const sm_;
};

pb::Role ToProto(raft::Role role);

// Finishes a unary call: OK (the response is filled in), or the reply's error
// with its hint in the trailing metadata (see proto/rsm.proto).
void FinishUnary(grpc::CallbackServerContext* ctx, grpc::ServerUnaryReactor* reactor,
                 const pb::ReplyStatus& reply);

// Finishes a unary call from an absl::Status (the common case of a handler
// that has no Batch form).
void FinishUnary(const ReplicaContext& replica, grpc::CallbackServerContext* ctx,
                 grpc::ServerUnaryReactor* reactor, const absl::Status& status);

// One unary call served through a service's one request path: the request
// goes into its envelope (`in`: the envelope's mutable accessor of that
// request, e.g. &KvRequest::mutable_put), `handle(envelope, deadline, done)`
// runs it, and the response comes out of the response envelope (`out`) with
// the envelope's status as the call's status and trailers.
template <typename InEnvelope, typename OutEnvelope, typename Request, typename Response,
          typename Handle>
grpc::ServerUnaryReactor* ServeUnary(const ReplicaContext& replica,
                                     grpc::CallbackServerContext* ctx, const Request* req,
                                     Response* resp, Request* (InEnvelope::*in)(),
                                     Response* (OutEnvelope::*out)(), const Handle& handle) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  InEnvelope envelope;
  *(envelope.*in)() = *req;
  handle(std::move(envelope), replica.CallDeadline(ctx),
         [ctx, reactor, resp, out](OutEnvelope answer) {
           if (answer.status().code() == 0) *resp = std::move(*(answer.*out)());
           FinishUnary(ctx, reactor, answer.status());
         });
  return reactor;
}

// ds.rsm.pb.Replica: Status (local, not linearizable) and Register (opens a
// session through the log). The Rsm must apply to a SessionStateMachine.
class ReplicaServiceImpl final : public pb::Replica::CallbackService {
 public:
  // `replica` must outlive the service.
  explicit ReplicaServiceImpl(const ReplicaContext* replica) : replica_(replica) {}

  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx, const pb::StatusRequest* req,
                                   pb::StatusResponse* resp) override;
  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx,
                                     const pb::RegisterRequest* req,
                                     pb::RegisterResponse* resp) override;
  // Membership: the list is this replica's view; changes go through the
  // leader's log (Rsm::ChangeMembershipAsync).
  grpc::ServerUnaryReactor* MemberList(grpc::CallbackServerContext* ctx,
                                       const pb::MemberListRequest* req,
                                       pb::MemberListResponse* resp) override;
  grpc::ServerUnaryReactor* MemberAdd(grpc::CallbackServerContext* ctx,
                                      const pb::MemberAddRequest* req,
                                      pb::MemberChangeResponse* resp) override;
  grpc::ServerUnaryReactor* MemberPromote(grpc::CallbackServerContext* ctx,
                                          const pb::MemberPromoteRequest* req,
                                          pb::MemberChangeResponse* resp) override;
  grpc::ServerUnaryReactor* MemberRemove(grpc::CallbackServerContext* ctx,
                                         const pb::MemberRemoveRequest* req,
                                         pb::MemberChangeResponse* resp) override;

 private:
  grpc::ServerUnaryReactor* ChangeMembers(grpc::CallbackServerContext* ctx,
                                          raft::pb::ConfChange change,
                                          pb::MemberChangeResponse* resp);
  const ReplicaContext* const replica_;
};

}  // namespace ds::rsm
