// ShardCtrler: the client-facing gRPC service of shardctrler-server. Only the
// controller's request translation lives here; sessions, leader hints,
// deadlines and the Replica service come from the replicated-service layer.
// Join, Leave, Move and Servers go through the log (exactly-once with the
// caller's session); Query and Latest are linearizable reads through ReadIndex.
#pragma once

#include <functional>

#include "proto/shardctrler.grpc.pb.h"
#include "raft/service/replica_service.h"
#include "shardctrler/ctrl_state_machine.h"

namespace ds::ctrl {

struct CtrlServiceOptions {
  // This server's --shards: stamped on every configuration-making command, so
  // that replicas started with different counts cannot diverge (see
  // CtrlStateMachine). Default: 10.
  int shard_count = kDefaultShardCount;
};

// The one request path of the unary calls and the in-process tests: runs
// `req` on `replica` (whose application is a CtrlStateMachine) and passes the
// filled response (status with leader hint, result) to `done`, on whichever
// thread finished it.
void HandleCtrlRequest(const rsm::ReplicaContext& replica, const CtrlServiceOptions& options,
                       pb::CtrlRequest req, absl::Time deadline,
                       std::function<void(pb::CtrlResponse)> done);

class CtrlServiceImpl final : public pb::ShardCtrler::CallbackService {
 public:
  // `replica` must outlive the service.
  CtrlServiceImpl(CtrlServiceOptions options, const rsm::ReplicaContext* replica);

  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* ctx, const pb::JoinRequest* req,
                                 pb::JoinResponse* resp) override;
  grpc::ServerUnaryReactor* Leave(grpc::CallbackServerContext* ctx, const pb::LeaveRequest* req,
                                  pb::LeaveResponse* resp) override;
  grpc::ServerUnaryReactor* Move(grpc::CallbackServerContext* ctx, const pb::MoveRequest* req,
                                 pb::MoveResponse* resp) override;
  grpc::ServerUnaryReactor* Servers(grpc::CallbackServerContext* ctx, const pb::ServersRequest* req,
                                    pb::ServersResponse* resp) override;
  grpc::ServerUnaryReactor* Query(grpc::CallbackServerContext* ctx, const pb::QueryRequest* req,
                                  pb::QueryResponse* resp) override;
  grpc::ServerUnaryReactor* Latest(grpc::CallbackServerContext* ctx, const pb::LatestRequest* req,
                                   pb::LatestResponse* resp) override;

 private:
  using Handler =
      std::function<void(pb::CtrlRequest, absl::Time, std::function<void(pb::CtrlResponse)>)>;

  const CtrlServiceOptions options_;
  const rsm::ReplicaContext* const replica_;
  const Handler handler_;
};

}  // namespace ds::ctrl
