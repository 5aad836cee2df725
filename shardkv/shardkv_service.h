// The request paths of shardkv-server: clients use KvService (kvraft's
// request translation, kvraft/kv_service.h, with ShardKvBackend: writes go
// into the log as a ShardKvCommand, reads check the key's shard at the read
// point); other groups use ShardMigration (pull a shard in chunks, delete a
// handed-off shard).
#pragma once

#include <functional>

#include "kvraft/kv_service.h"
#include "proto/shardkv.grpc.pb.h"
#include "raft/service/replica_service.h"
#include "shardkv/shardkv_state_machine.h"

namespace ds::shardkv {

class ShardKvBackend final : public kv::KvBackend {
 public:
  void Submit(raft::Rsm& rsm, const rsm::pb::SessionRef& session, const kv::pb::KvCommand& cmd,
              absl::Time deadline, rsm::ResultCallback done) const override;
  absl::StatusOr<kv::pb::KvResult> Read(const rsm::Application& app,
                                        std::string_view key) const override;
};

// The one request path of ShardMigration's unary calls and of the in-process
// tests, on a replica whose application is a ShardKvStateMachine.
void HandleMigrationRequest(const rsm::ReplicaContext& replica, pb::MigrationRequest req,
                            absl::Time deadline, std::function<void(pb::MigrationResponse)> done);

// Proposes one of the group's own commands (configuration, install, garbage
// collection: no session, idempotent) and reports when it is applied here.
void SubmitInternal(raft::Rsm& rsm, const pb::ShardKvCommand& cmd, absl::Time deadline,
                    std::function<void(absl::Status)> done);

class MigrationServiceImpl final : public pb::ShardMigration::CallbackService {
 public:
  // `replica` must outlive the service. `authorize`, if set, decides whether a
  // call may come from another group's replica (a peer certificate under
  // TLS); a non-OK status refuses the call with it.
  explicit MigrationServiceImpl(
      const rsm::ReplicaContext* replica,
      std::function<grpc::Status(const grpc::ServerContextBase&)> authorize = nullptr);

  grpc::ServerUnaryReactor* PullShard(grpc::CallbackServerContext* ctx,
                                      const pb::PullShardRequest* req,
                                      pb::PullShardResponse* resp) override;
  grpc::ServerUnaryReactor* DeleteShard(grpc::CallbackServerContext* ctx,
                                        const pb::DeleteShardRequest* req,
                                        pb::DeleteShardResponse* resp) override;

 private:
  using Handler = std::function<void(pb::MigrationRequest, absl::Time,
                                     std::function<void(pb::MigrationResponse)>)>;
  // A reactor that ends the call with `authorize_`'s refusal; null if allowed.
  grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* ctx);

  const rsm::ReplicaContext* const replica_;
  const std::function<grpc::Status(const grpc::ServerContextBase&)> authorize_;
  const Handler handler_;
};

}  // namespace ds::shardkv
