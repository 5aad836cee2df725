// KvService: the client-facing gRPC service of kvraft-server, over the RSM
// layer. Writes are proposed through Raft and answered once applied; Gets are
// linearizable reads through ReadIndex (nothing written to the log).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "kvraft/kv_state_machine.h"
#include "proto/kv.grpc.pb.h"
#include "raft/rsm.h"
#include "raft/state_machine.h"

namespace ds::kv {

struct KvServiceOptions {
  // Largest key + value accepted in one request, in bytes. Default: 1.5 MiB
  // (etcd's --max-request-bytes).
  uint64_t max_request_bytes = 1536 * 1024;
  // Longest a request waits to be applied (or for a read point) when the
  // client's own deadline is later. Default: 5 s.
  absl::Duration request_timeout = absl::Seconds(5);
  // Every replica: id -> client address "host:port", for leader hints.
  std::map<uint64_t, std::string> addresses;
};

// The KV state machine behind the raft::StateMachine interface.
class KvReplicatedStateMachine : public raft::StateMachine {
 public:
  explicit KvReplicatedStateMachine(KvStateMachineOptions options) : kv_(options) {}
  absl::StatusOr<std::string> Apply(const std::string& command, uint64_t index) override;
  uint64_t applied_index() const override { return kv_.applied_index(); }
  std::string Snapshot() const override { return kv_.Snapshot(); }
  absl::Status Restore(const std::string& snapshot) override { return kv_.Restore(snapshot); }
  const KvStateMachine& kv() const { return kv_; }

 private:
  KvStateMachine kv_;
};

// The request path of KvServiceImpl, shared with in-process tests. Both answer
// at once with kUnavailable on a replica that is not the leader; on
// kUnavailable `*leader_hint` (if not null) is the known leader, 0 if unknown.
//
// SubmitKvWrite stamps `cmd` with the leader's clock (session expiry, see
// KvCommand), proposes it and returns its result once applied here.
absl::StatusOr<pb::KvResult> SubmitKvWrite(raft::Rsm& rsm, pb::KvCommand cmd,
                                           absl::Duration timeout, uint64_t* leader_hint);
// A linearizable Get through ReadIndex.
absl::StatusOr<pb::KvResult> ReadKv(raft::Rsm& rsm, const std::string& key, absl::Duration timeout,
                                    uint64_t* leader_hint);

class KvServiceImpl final : public pb::KvService::Service {
 public:
  // `rsm` must outlive the service.
  KvServiceImpl(KvServiceOptions options, raft::Rsm* rsm)
      : options_(std::move(options)), rsm_(rsm) {}

  grpc::Status Get(grpc::ServerContext* ctx, const pb::GetRequest* req,
                   pb::GetResponse* resp) override;
  grpc::Status Put(grpc::ServerContext* ctx, const pb::PutRequest* req,
                   pb::PutResponse* resp) override;
  grpc::Status Append(grpc::ServerContext* ctx, const pb::AppendRequest* req,
                      pb::AppendResponse* resp) override;
  grpc::Status Delete(grpc::ServerContext* ctx, const pb::DeleteRequest* req,
                      pb::DeleteResponse* resp) override;
  grpc::Status Status(grpc::ServerContext* ctx, const pb::StatusRequest* req,
                      pb::StatusResponse* resp) override;

 private:
  grpc::Status Write(grpc::ServerContext* ctx, pb::KvCommand cmd, pb::ResponseHeader* header,
                     pb::KvResult* result);
  // UNAVAILABLE with the leader hint in the trailing metadata.
  grpc::Status NotLeader(grpc::ServerContext* ctx, uint64_t leader, const std::string& why);
  grpc::Status ToGrpc(grpc::ServerContext* ctx, const absl::Status& st, uint64_t leader_hint);
  absl::Duration Timeout(const grpc::ServerContext* ctx) const;
  void FillHeader(pb::ResponseHeader* header) const;

  const KvServiceOptions options_;
  raft::Rsm* const rsm_;
};

}  // namespace ds::kv
