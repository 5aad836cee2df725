// KvService: the client-facing gRPC service of kvraft-server, over the RSM
// layer. Writes are proposed through Raft and answered once applied; Gets are
// linearizable reads through ReadIndex (nothing written to the log).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/stream_registry.h"
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

// The request path of KvServiceImpl, shared with in-process tests. All answer
// at once with kUnavailable on a replica that is not the leader; with
// kUnavailable the leader hint is the known leader, 0 if unknown.
//
// Writes: stamps `cmd` with the leader's clock (session expiry, see
// KvCommand), proposes it and reports its result once applied here.
using KvCallback = std::function<void(absl::StatusOr<pb::KvResult> result, uint64_t leader_hint)>;
void SubmitKvWriteAsync(raft::Rsm& rsm, pb::KvCommand cmd, absl::Time deadline, KvCallback done);
// A linearizable Get through ReadIndex.
void ReadKvAsync(raft::Rsm& rsm, std::string key, absl::Time deadline, KvCallback done);

// Blocking forms; on kUnavailable `*leader_hint` (if not null) is the hint.
absl::StatusOr<pb::KvResult> SubmitKvWrite(raft::Rsm& rsm, pb::KvCommand cmd,
                                           absl::Duration timeout, uint64_t* leader_hint);
absl::StatusOr<pb::KvResult> ReadKv(raft::Rsm& rsm, const std::string& key, absl::Duration timeout,
                                    uint64_t* leader_hint);

// On gRPC's callback API: no thread is held while a request waits for Raft;
// the answer is sent from the thread that applied the entry (or confirmed the
// read point).
class KvServiceImpl final : public pb::KvService::CallbackService {
 public:
  // `rsm` must outlive the service.
  KvServiceImpl(KvServiceOptions options, raft::Rsm* rsm)
      : options_(std::move(options)), rsm_(rsm) {}

  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const pb::GetRequest* req,
                                pb::GetResponse* resp) override;
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const pb::PutRequest* req,
                                pb::PutResponse* resp) override;
  grpc::ServerUnaryReactor* Append(grpc::CallbackServerContext* ctx, const pb::AppendRequest* req,
                                   pb::AppendResponse* resp) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx, const pb::DeleteRequest* req,
                                   pb::DeleteResponse* resp) override;
  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx, const pb::StatusRequest* req,
                                   pb::StatusResponse* resp) override;
  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx,
                                     const pb::RegisterRequest* req,
                                     pb::RegisterResponse* resp) override;
  grpc::ServerBidiReactor<pb::KvRequestBatch, pb::KvResponseBatch>* Batch(
      grpc::CallbackServerContext* ctx) override;

  // Ends every open Batch stream (and refuses new ones) so that a graceful
  // server shutdown need not wait for them; call just before it.
  void CloseStreams() { streams_.CloseAll(); }

 private:
  class BatchReactor;
  using ResponseCallback = std::function<void(pb::KvResponse)>;

  // The one request path of the unary calls and Batch: validates `req`, runs
  // it and passes the filled response (id, status, leader hint, result) to
  // `done`, on whichever thread finished it. `deadline` bounds the wait.
  void Handle(pb::KvRequest req, absl::Time deadline, ResponseCallback done);
  void FillHeader(pb::ResponseHeader* header) const;

  const KvServiceOptions options_;
  raft::Rsm* const rsm_;
  common::StreamRegistry streams_;
};

}  // namespace ds::kv
