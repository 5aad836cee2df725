#include "kvraft/kv_service.h"

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace ds::kv {

absl::StatusOr<std::string> KvReplicatedStateMachine::Apply(const std::string& command,
                                                            uint64_t index) {
  absl::StatusOr<pb::KvResult> r = kv_.Apply(command, index);
  if (!r.ok()) return r.status();
  return r->SerializeAsString();
}

namespace {

// A replica that is not the leader answers at once instead of letting the
// request wait for its deadline.
bool NotLeaderHere(raft::Rsm& rsm, const KvCallback& done) {
  raft::NodeStatus st = rsm.status();
  if (st.role == raft::Role::kLeader) return false;
  done(absl::UnavailableError("not the leader"), st.leader);
  return true;
}

// Waits for an asynchronous KvCallback.
struct SyncKv {
  absl::StatusOr<pb::KvResult> result;
  uint64_t hint = 0;
  absl::Notification done;
};

absl::StatusOr<pb::KvResult> Wait(const std::shared_ptr<SyncKv>& sync, uint64_t* leader_hint) {
  sync->done.WaitForNotification();
  if (!sync->result.ok() && leader_hint != nullptr) *leader_hint = sync->hint;
  return std::move(sync->result);
}

KvCallback Notifier(std::shared_ptr<SyncKv> sync) {
  return [sync](absl::StatusOr<pb::KvResult> r, uint64_t hint) {
    sync->result = std::move(r);
    sync->hint = hint;
    sync->done.Notify();
  };
}

}  // namespace

void SubmitKvWriteAsync(raft::Rsm& rsm, pb::KvCommand cmd, absl::Time deadline, KvCallback done) {
  if (NotLeaderHere(rsm, done)) return;
  cmd.set_proposal_time_unix_micros(absl::ToUnixMicros(absl::Now()));
  rsm.SubmitAsync(cmd.SerializeAsString(), deadline,
                  [done = std::move(done)](absl::StatusOr<std::string> r) {
                    if (!r.ok()) {
                      done(r.status(), raft::LeaderHint(r.status()));
                      return;
                    }
                    pb::KvResult result;
                    if (!result.ParseFromString(*r)) {
                      done(absl::InternalError("unreadable result from the state machine"), 0);
                      return;
                    }
                    done(std::move(result), 0);
                  });
}

void ReadKvAsync(raft::Rsm& rsm, std::string key, absl::Time deadline, KvCallback done) {
  if (NotLeaderHere(rsm, done)) return;
  // The query fills `result`; `done` runs after it (same request, no race).
  auto result = std::make_shared<pb::KvResult>();
  rsm.ReadAsync(
      deadline,
      [result, key = std::move(key)](const raft::StateMachine& sm) {
        *result = static_cast<const KvReplicatedStateMachine&>(sm).kv().Get(key);
      },
      [result, done = std::move(done)](absl::Status s) {
        if (!s.ok()) {
          done(s, raft::LeaderHint(s));
          return;
        }
        done(std::move(*result), 0);
      });
}

absl::StatusOr<pb::KvResult> SubmitKvWrite(raft::Rsm& rsm, pb::KvCommand cmd,
                                           absl::Duration timeout, uint64_t* leader_hint) {
  auto sync = std::make_shared<SyncKv>();
  SubmitKvWriteAsync(rsm, std::move(cmd), absl::Now() + timeout, Notifier(sync));
  return Wait(sync, leader_hint);
}

absl::StatusOr<pb::KvResult> ReadKv(raft::Rsm& rsm, const std::string& key, absl::Duration timeout,
                                    uint64_t* leader_hint) {
  auto sync = std::make_shared<SyncKv>();
  ReadKvAsync(rsm, key, absl::Now() + timeout, Notifier(sync));
  return Wait(sync, leader_hint);
}

void KvServiceImpl::FillHeader(pb::ResponseHeader* header) const {
  raft::NodeStatus st = rsm_->status();
  header->set_member_id(st.id);
  header->set_term(st.term);
  header->set_applied_index(st.applied);
}

void KvServiceImpl::Handle(pb::KvRequest req, absl::Time deadline, ResponseCallback done) {
  if (req.timeout_ms() > 0) {
    deadline = std::min(deadline, absl::Now() + absl::Milliseconds(req.timeout_ms()));
  }
  pb::KvResponse resp;
  resp.set_id(req.id());
  auto reject = [&](absl::StatusCode code, std::string message) {
    resp.clear_result();
    resp.set_code(static_cast<int>(code));
    resp.set_message(std::move(message));
    done(std::move(resp));
  };
  // A finished request: the status, and the hint with UNAVAILABLE.
  auto complete = [this](pb::KvResponse& r, const absl::Status& st, uint64_t leader) {
    r.set_code(static_cast<int>(st.code()));
    if (st.ok()) return;
    r.set_message(std::string(st.message()));
    r.clear_result();
    if (st.code() == absl::StatusCode::kUnavailable && leader != 0) {
      r.set_leader_id(leader);
      auto it = options_.addresses.find(leader);
      if (it != options_.addresses.end()) r.set_leader_address(it->second);
    }
  };

  if (req.op_case() == pb::KvRequest::kGet) {
    if (req.get().key().empty()) return reject(absl::StatusCode::kInvalidArgument, "empty key");
    ReadKvAsync(*rsm_, std::move(*req.mutable_get()->mutable_key()), deadline,
                [this, resp = std::move(resp), done = std::move(done), complete](
                    absl::StatusOr<pb::KvResult> r, uint64_t hint) mutable {
                  if (r.ok()) {
                    pb::GetResponse* g = resp.mutable_get();
                    g->set_found(r->found());
                    *g->mutable_value() = std::move(*r->mutable_value());
                    FillHeader(g->mutable_header());
                  }
                  complete(resp, r.status(), hint);
                  done(std::move(resp));
                });
    return;
  }

  pb::KvCommand cmd;
  bool needs_session = true;
  switch (req.op_case()) {
    case pb::KvRequest::kPut: {
      pb::PutRequest& r = *req.mutable_put();
      cmd.set_op(pb::OP_PUT);
      cmd.set_key(std::move(*r.mutable_key()));
      cmd.set_value(std::move(*r.mutable_value()));
      cmd.set_client_id(r.client_id());
      cmd.set_sequence(r.sequence());
      resp.mutable_put();
      break;
    }
    case pb::KvRequest::kAppend: {
      pb::AppendRequest& r = *req.mutable_append();
      cmd.set_op(pb::OP_APPEND);
      cmd.set_key(std::move(*r.mutable_key()));
      cmd.set_value(std::move(*r.mutable_value()));
      cmd.set_client_id(r.client_id());
      cmd.set_sequence(r.sequence());
      resp.mutable_append();
      break;
    }
    case pb::KvRequest::kDelete: {
      pb::DeleteRequest& r = *req.mutable_delete_();
      cmd.set_op(pb::OP_DELETE);
      cmd.set_key(std::move(*r.mutable_key()));
      cmd.set_client_id(r.client_id());
      cmd.set_sequence(r.sequence());
      resp.mutable_delete_();
      break;
    }
    case pb::KvRequest::kRegister:
      cmd.set_op(pb::OP_REGISTER);
      needs_session = false;
      resp.mutable_register_();
      break;
    default:
      return reject(absl::StatusCode::kInvalidArgument, "request without an operation");
  }
  if (needs_session) {
    if (cmd.key().empty()) return reject(absl::StatusCode::kInvalidArgument, "empty key");
    const uint64_t size = cmd.key().size() + cmd.value().size();
    if (size > options_.max_request_bytes) {
      return reject(absl::StatusCode::kInvalidArgument,
                    absl::StrCat("request of ", size, " bytes exceeds the limit of ",
                                 options_.max_request_bytes, " bytes (--max-request-bytes)"));
    }
    if (cmd.client_id() == 0 || cmd.sequence() == 0) {
      return reject(absl::StatusCode::kInvalidArgument,
                    "writes need a nonzero client_id and sequence");
    }
  }
  SubmitKvWriteAsync(*rsm_, std::move(cmd), deadline,
                     [this, resp = std::move(resp), done = std::move(done), complete](
                         absl::StatusOr<pb::KvResult> r, uint64_t hint) mutable {
                       if (r.ok()) {
                         switch (resp.result_case()) {
                           case pb::KvResponse::kPut:
                             FillHeader(resp.mutable_put()->mutable_header());
                             break;
                           case pb::KvResponse::kAppend:
                             FillHeader(resp.mutable_append()->mutable_header());
                             break;
                           case pb::KvResponse::kDelete:
                             resp.mutable_delete_()->set_found(r->found());
                             FillHeader(resp.mutable_delete_()->mutable_header());
                             break;
                           case pb::KvResponse::kRegister:
                             resp.mutable_register_()->set_client_id(r->client_id());
                             FillHeader(resp.mutable_register_()->mutable_header());
                             break;
                           default:
                             break;
                         }
                       }
                       complete(resp, r.status(), hint);
                       done(std::move(resp));
                     });
}

// ---- Unary calls: each is one request through Handle() ----

namespace {

absl::Time CallDeadline(const grpc::CallbackServerContext* ctx, absl::Duration limit) {
  return std::min(absl::FromChrono(ctx->deadline()), absl::Now() + limit);
}

// Finishes a unary call from a KvResponse; `take` moves the result into the
// call's response message.
template <typename Take>
void FinishUnary(grpc::CallbackServerContext* ctx, grpc::ServerUnaryReactor* reactor,
                 pb::KvResponse& r, Take take) {
  if (r.code() == 0) {
    take(r);
    reactor->Finish(grpc::Status::OK);
    return;
  }
  std::string message = r.message();
  if (r.leader_id() != 0) {
    ctx->AddTrailingMetadata("ds-leader-id", std::to_string(r.leader_id()));
    if (!r.leader_address().empty()) {
      ctx->AddTrailingMetadata("ds-leader-address", r.leader_address());
    }
    absl::StrAppend(&message, "; leader is ", r.leader_id());
  }
  reactor->Finish(grpc::Status(static_cast<grpc::StatusCode>(r.code()), message));
}

}  // namespace

#define DS_KV_UNARY(Method, Mutable)                                                      \
  grpc::ServerUnaryReactor* KvServiceImpl::Method(grpc::CallbackServerContext* ctx,       \
                                                  const pb::Method##Request* req,         \
                                                  pb::Method##Response* resp) {           \
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();                            \
    pb::KvRequest r;                                                                      \
    *r.Mutable() = *req;                                                                  \
    Handle(std::move(r), CallDeadline(ctx, options_.request_timeout),                     \
           [ctx, reactor, resp](pb::KvResponse out) {                                     \
             FinishUnary(ctx, reactor, out,                                               \
                         [resp](pb::KvResponse& o) { *resp = std::move(*o.Mutable()); }); \
           });                                                                            \
    return reactor;                                                                       \
  }

DS_KV_UNARY(Get, mutable_get)
DS_KV_UNARY(Put, mutable_put)
DS_KV_UNARY(Append, mutable_append)
DS_KV_UNARY(Delete, mutable_delete_)
DS_KV_UNARY(Register, mutable_register_)
#undef DS_KV_UNARY

// ---- Batch: a bidirectional stream of requests ----
//
// Reads run ahead of the answers: each message read is dispatched at once and
// the next read started, so a client may keep any number of requests in
// flight. Answers are queued and written as they complete; everything queued
// while a write is in flight goes out in the next message. gRPC's reactor
// methods are never called under mu_ (they may run callbacks inline).
class KvServiceImpl::BatchReactor final
    : public grpc::ServerBidiReactor<pb::KvRequestBatch, pb::KvResponseBatch>,
      public common::ClosableStream {
 public:
  // Owns itself (self_) until gRPC is done with it, so the shutdown path can
  // hold a reference while it calls Close().
  static BatchReactor* Open(KvServiceImpl* service) {
    std::shared_ptr<BatchReactor> r(new BatchReactor(service));
    r->self_ = r;
    r->StartRead(&r->in_);
    service->streams_.Add(r);
    return r.get();
  }

  // Server shutdown: answers still in flight are dropped (their outcome is
  // unknown to the client, which retries elsewhere with the same sequence
  // numbers); the stream ends with UNAVAILABLE.
  void Close() override {
    {
      absl::MutexLock lock(&state_->mu);
      state_->broken = true;
      state_->final_status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "replica shutting down");
    }
    MaybeFinish(state_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client closed its side (or the call broke): answer what is in
      // flight, then finish.
      {
        absl::MutexLock lock(&state_->mu);
        state_->reads_done = true;
      }
      MaybeFinish(state_);
      return;
    }
    pb::KvRequestBatch batch = std::move(in_);
    in_.Clear();
    {
      absl::MutexLock lock(&state_->mu);
      if (state_->finishing) return;
      state_->in_flight += batch.requests_size();
    }
    // After StartRead the reactor may finish and go away (a cancelled call)
    // before this function returns: use only locals from here on.
    KvServiceImpl* const service = service_;
    const std::shared_ptr<State> state = state_;
    const absl::Time deadline = absl::Now() + service->options_.request_timeout;
    StartRead(&in_);
    for (pb::KvRequest& req : *batch.mutable_requests()) {
      service->Handle(std::move(req), deadline,
                      [state](pb::KvResponse resp) { Answer(state, std::move(resp)); });
    }
  }

  void OnWriteDone(bool ok) override {
    bool write = false;
    {
      absl::MutexLock lock(&state_->mu);
      state_->writing = false;
      if (!ok) {
        state_->broken = true;
      } else if (state_->out.responses_size() > 0 && !state_->finishing) {
        write = true;
        state_->writing = true;
        state_->sending = std::move(state_->out);
        state_->out.Clear();
      }
    }
    if (write) {
      StartWrite(&state_->sending);
    } else {
      MaybeFinish(state_);
    }
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&state_->mu);
      state_->broken = true;
    }
    MaybeFinish(state_);
  }

  void OnDone() override {
    {
      absl::MutexLock lock(&state_->mu);
      state_->reactor = nullptr;
    }
    std::shared_ptr<BatchReactor> last = std::move(self_);  // may delete this on return
  }

 private:
  explicit BatchReactor(KvServiceImpl* service)
      : service_(service), state_(std::make_shared<State>()) {
    state_->reactor = this;
  }

  // Shared with the callbacks of requests in flight, which may outlive the
  // reactor (a cancelled stream finishes without waiting for them).
  struct State {
    absl::Mutex mu;
    BatchReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
    pb::KvResponseBatch out ABSL_GUARDED_BY(mu);  // answers waiting for a write
    // The message being written; only touched by whoever set `writing`.
    pb::KvResponseBatch sending;
    int64_t in_flight ABSL_GUARDED_BY(mu) = 0;
    bool writing ABSL_GUARDED_BY(mu) = false;
    bool reads_done ABSL_GUARDED_BY(mu) = false;
    bool broken ABSL_GUARDED_BY(mu) = false;     // cancelled or a write failed
    bool finishing ABSL_GUARDED_BY(mu) = false;  // Finish() called or about to be
    grpc::Status final_status ABSL_GUARDED_BY(mu);
  };

  static void Answer(const std::shared_ptr<State>& state, pb::KvResponse resp) {
    BatchReactor* write = nullptr;
    {
      absl::MutexLock lock(&state->mu);
      --state->in_flight;
      if (state->finishing || state->broken) {
        // Nobody to answer; the stream may be finishing on this request.
      } else {
        *state->out.add_responses() = std::move(resp);
        if (!state->writing) {
          state->writing = true;
          state->sending = std::move(state->out);
          state->out.Clear();
          write = state->reactor;
        }
      }
    }
    if (write != nullptr) {
      write->StartWrite(&state->sending);
    } else {
      MaybeFinish(state);
    }
  }

  // Finishes once nothing more will be written: the client is done sending
  // and every answer went out, or the stream broke (no write in flight).
  static void MaybeFinish(const std::shared_ptr<State>& state) {
    BatchReactor* finish = nullptr;
    grpc::Status status;
    {
      absl::MutexLock lock(&state->mu);
      if (state->finishing || state->writing || state->reactor == nullptr) return;
      const bool drained =
          state->reads_done && state->in_flight == 0 && state->out.responses_size() == 0;
      if (!drained && !state->broken) return;
      state->finishing = true;
      finish = state->reactor;
      status = state->final_status;
    }
    finish->Finish(status);
  }

  KvServiceImpl* const service_;
  std::shared_ptr<State> state_;
  pb::KvRequestBatch in_;
  std::shared_ptr<BatchReactor> self_;
};

grpc::ServerBidiReactor<pb::KvRequestBatch, pb::KvResponseBatch>* KvServiceImpl::Batch(
    grpc::CallbackServerContext*) {
  return BatchReactor::Open(this);
}

grpc::ServerUnaryReactor* KvServiceImpl::Status(grpc::CallbackServerContext* ctx,
                                                const pb::StatusRequest*,
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
  resp->set_raft_loops(st.loops);
  resp->set_raft_saves(st.saves);
  resp->set_raft_fsyncs(st.synced_saves);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace ds::kv
