// KvService: the client-facing gRPC service of kvraft-server. Only the KV
// request translation lives here; sessions, leader hints, deadlines, the
// Batch stream and the Replica service come from the replicated-service layer
// (raft/rsm/, raft/service/). Writes are proposed through Raft and answered
// once applied; Gets are linearizable reads through ReadIndex.
#pragma once

#include <cstdint>
#include <functional>

#include "common/stream_registry.h"
#include "kvraft/kv_state_machine.h"
#include "proto/kv.grpc.pb.h"
#include "raft/rsm/requests.h"
#include "raft/service/batch_stream.h"
#include "raft/service/replica_service.h"

namespace ds::kv {

// How a KV request becomes a command in the log or a read: kvraft's
// KvStateMachine (the default), or shardkv's, which wraps writes in its own
// command and refuses keys of shards its group does not serve.
class KvBackend {
 public:
  virtual ~KvBackend() = default;
  // Proposes the write `cmd` under `session`; `done` as rsm::SubmitAsync's
  // (the result is a serialized pb::KvResult).
  virtual void Submit(raft::Rsm& rsm, const rsm::pb::SessionRef& session, const pb::KvCommand& cmd,
                      absl::Time deadline, rsm::ResultCallback done) const;
  // The value of `key` in `app` at a linearizable read point (runs under the
  // Rsm's lock: quick, no blocking).
  virtual absl::StatusOr<pb::KvResult> Read(const rsm::Application& app,
                                            std::string_view key) const;
};

struct KvServiceOptions {
  // Largest key + value accepted in one request, in bytes. Default: 1.5 MiB
  // (etcd's --max-request-bytes).
  uint64_t max_request_bytes = 1536 * 1024;
  // nullptr (default): kvraft's KvStateMachine. Must outlive the service.
  const KvBackend* backend = nullptr;
};

// The one request path of the unary calls, Batch, and the in-process tests:
// validates `req`, runs it on `replica` (whose application is a
// KvStateMachine) and passes the filled response (id, status with leader
// hint, result) to `done`, on whichever thread finished it. `deadline` bounds
// the wait (req.timeout_ms() may shorten it).
void HandleKvRequest(const rsm::ReplicaContext& replica, const KvServiceOptions& options,
                     pb::KvRequest req, absl::Time deadline,
                     std::function<void(pb::KvResponse)> done);

// On gRPC's callback API: no thread is held while a request waits for Raft;
// the answer is sent from the thread that applied the entry (or confirmed the
// read point).
class KvServiceImpl final : public pb::KvService::CallbackService {
 public:
  // `replica` must outlive the service.
  KvServiceImpl(KvServiceOptions options, const rsm::ReplicaContext* replica);

  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const pb::GetRequest* req,
                                pb::GetResponse* resp) override;
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const pb::PutRequest* req,
                                pb::PutResponse* resp) override;
  grpc::ServerUnaryReactor* Append(grpc::CallbackServerContext* ctx, const pb::AppendRequest* req,
                                   pb::AppendResponse* resp) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx, const pb::DeleteRequest* req,
                                   pb::DeleteResponse* resp) override;
  grpc::ServerBidiReactor<pb::KvRequestBatch, pb::KvResponseBatch>* Batch(
      grpc::CallbackServerContext* ctx) override;

  // Ends every open Batch stream (and refuses new ones) so that a graceful
  // server shutdown need not wait for them; call just before it.
  void CloseStreams() { streams_.CloseAll(); }

 private:
  using Stream = rsm::BatchStream<pb::KvRequestBatch, pb::KvResponseBatch>;

  const KvServiceOptions options_;
  const rsm::ReplicaContext* const replica_;
  const Stream::Handler handler_;
  common::StreamRegistry streams_;
};

}  // namespace ds::kv
