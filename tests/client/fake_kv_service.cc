#include "tests/client/fake_kv_service.h"

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "raft/service/batch_stream.h"
#include "raft/service/replica_service.h"

namespace ds::client::testing {

using kv::pb::KvRequest;
using kv::pb::KvResponse;

namespace {

// The fake never changes term; clients only print it.
constexpr uint64_t kTerm = 7;

int64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

// `status` as the wire carries it (the part of ReplicaContext::FillReply that
// needs no Raft node): the code, and with kAborted the session watermark.
void FillError(const absl::Status& status, rsm::pb::ReplyStatus* reply) {
  reply->set_code(static_cast<int>(status.code()));
  if (status.ok()) return;
  reply->set_message(std::string(status.message()));
  if (status.code() == absl::StatusCode::kAborted) {
    reply->set_session_watermark_unix_micros(rsm::SessionWatermark(status));
  }
}

}  // namespace

absl::StatusOr<std::string> FakeKvCluster::CountingKv::Apply(std::string_view command,
                                                             const rsm::ApplyContext& context) {
  absl::StatusOr<std::string> r = kv.Apply(command, context);
  if (r.ok() && context.session != nullptr) {
    ++applied;
    sessions.insert(context.session->client_id());
  }
  return r;
}

// ---- KvService ----

class FakeKvCluster::KvFrontend final : public kv::pb::KvService::CallbackService {
 public:
  KvFrontend(FakeKvCluster* cluster, int replica)
      : cluster_(cluster),
        replica_(replica),
        handler_(
            [cluster, replica](KvRequest req, absl::Time, std::function<void(KvResponse)> done) {
              cluster->HandleKv(replica, std::move(req), std::move(done));
            }) {}

  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const kv::pb::GetRequest* req,
                                kv::pb::GetResponse* resp) override {
    KvRequest r;
    *r.mutable_get() = *req;
    return Unary(ctx, std::move(r), [resp](KvResponse& o) { *resp = std::move(*o.mutable_get()); });
  }
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const kv::pb::PutRequest* req,
                                kv::pb::PutResponse* resp) override {
    KvRequest r;
    *r.mutable_put() = *req;
    return Unary(ctx, std::move(r), [resp](KvResponse& o) { *resp = std::move(*o.mutable_put()); });
  }
  grpc::ServerUnaryReactor* Append(grpc::CallbackServerContext* ctx,
                                   const kv::pb::AppendRequest* req,
                                   kv::pb::AppendResponse* resp) override {
    KvRequest r;
    *r.mutable_append() = *req;
    return Unary(ctx, std::move(r),
                 [resp](KvResponse& o) { *resp = std::move(*o.mutable_append()); });
  }
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx,
                                   const kv::pb::DeleteRequest* req,
                                   kv::pb::DeleteResponse* resp) override {
    KvRequest r;
    *r.mutable_delete_() = *req;
    return Unary(ctx, std::move(r),
                 [resp](KvResponse& o) { *resp = std::move(*o.mutable_delete_()); });
  }
  grpc::ServerBidiReactor<kv::pb::KvRequestBatch, kv::pb::KvResponseBatch>* Batch(
      grpc::CallbackServerContext*) override {
    return Stream::Open(&handler_, absl::Seconds(5), &cluster_->streams_);
  }

 private:
  using Stream = rsm::BatchStream<kv::pb::KvRequestBatch, kv::pb::KvResponseBatch>;

  // As kvraft's KvServiceImpl: one request path; the status and its hint
  // travel in the gRPC status and trailing metadata (rsm::FinishUnary).
  template <typename Take>
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* ctx, KvRequest req, Take take) {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    cluster_->HandleKv(replica_, std::move(req), [ctx, reactor, take](KvResponse out) {
      if (out.status().code() == 0) take(out);
      rsm::FinishUnary(ctx, reactor, out.status());
    });
    return reactor;
  }

  FakeKvCluster* const cluster_;
  const int replica_;
  const Stream::Handler handler_;
};

// ---- ds.rsm.pb.Replica ----

class FakeKvCluster::ReplicaFrontend final : public rsm::pb::Replica::CallbackService {
 public:
  ReplicaFrontend(FakeKvCluster* cluster, int replica) : cluster_(cluster), replica_(replica) {}

  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx, const rsm::pb::StatusRequest*,
                                   rsm::pb::StatusResponse* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    cluster_->Dispatch(replica_, Call::kStatus, [this, reactor, resp] {
      cluster_->FillStatus(replica_, resp);
      reactor->Finish(grpc::Status::OK);
    });
    return reactor;
  }

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx,
                                     const rsm::pb::RegisterRequest* req,
                                     rsm::pb::RegisterResponse* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    cluster_->Dispatch(replica_, Call::kRegister, [this, ctx, reactor, req, resp] {
      rsm::pb::ReplyStatus reply;
      const rsm::pb::SessionRef& s = req->session();
      if (s.client_id() == 0 || s.created_unix_micros() <= 0) {
        FillError(
            absl::InvalidArgumentError("register needs a nonzero client id and creation time"),
            &reply);
      } else {
        absl::MutexLock lock(&cluster_->mu_);
        if (!cluster_->RefuseUnlessLeader(replica_, &reply)) {
          absl::StatusOr<std::string> r = cluster_->ApplyLocked(rsm::EncodeOpen(s, NowMicros()));
          FillError(r.status(), &reply);
          if (r.ok()) {
            cluster_->app_.sessions.insert(s.client_id());
            resp->mutable_header()->set_member_id(replica_ + 1);
            resp->mutable_header()->set_term(kTerm);
            resp->mutable_header()->set_applied_index(cluster_->last_index_);
          }
          cluster_->MaybeLoseReply(&reply);
        }
      }
      rsm::FinishUnary(ctx, reactor, reply);
    });
    return reactor;
  }

 private:
  FakeKvCluster* const cluster_;
  const int replica_;
};

// ---- The cluster ----

FakeKvCluster::FakeKvCluster(int replicas)
    : slow_calls_(replicas, 0),
      slow_delay_(replicas),
      kv_calls_(replicas, 0),
      status_calls_(replicas, 0),
      register_calls_(replicas, 0),
      sm_(&app_) {
  for (int i = 0; i < replicas; ++i) {
    kv_services_.push_back(std::make_unique<KvFrontend>(this, i));
    replica_services_.push_back(std::make_unique<ReplicaFrontend>(this, i));
    auto server = std::make_unique<common::GrpcServer>(
        common::GrpcServerOptions{.listen_address = "127.0.0.1:0"});
    server->AddService(kv_services_.back().get());
    server->AddService(replica_services_.back().get());
    if (!server->Start().ok()) std::abort();  // test set-up failure
    addresses_.push_back(server->address());
    servers_.push_back(std::move(server));
  }
}

FakeKvCluster::~FakeKvCluster() {
  // Streams first (they never end by themselves), then the servers, whose
  // shutdown waits for the answers that slow replicas still hold in timer_.
  streams_.CloseAll();
  for (auto& s : servers_) s->Shutdown(absl::ZeroDuration());
}

std::vector<std::string> FakeKvCluster::endpoints() const { return addresses_; }

std::string FakeKvCluster::endpoints_flag() const { return absl::StrJoin(addresses_, ","); }

void FakeKvCluster::set_leader(int replica) {
  absl::MutexLock lock(&mu_);
  leader_ = replica;
}

void FakeKvCluster::set_send_hints(bool on) {
  absl::MutexLock lock(&mu_);
  send_hints_ = on;
}

void FakeKvCluster::set_slow(int replica, int calls, absl::Duration delay) {
  absl::MutexLock lock(&mu_);
  slow_calls_[replica] = calls;
  slow_delay_[replica] = delay;
}

void FakeKvCluster::LoseReplies(int writes, bool then_expire_sessions) {
  absl::MutexLock lock(&mu_);
  lose_replies_ = writes;
  expire_after_lost_reply_ = then_expire_sessions;
}

void FakeKvCluster::ExpireSessions() {
  absl::MutexLock lock(&mu_);
  ExpireSessionsLocked();
}

void FakeKvCluster::ExpireSessionsLocked() {
  // A sessionless read through the log, proposed a TTL (and a second) after
  // the logical clock: applying it forgets every session, as the real state
  // machine does on the first command after a long idle time.
  const int64_t ttl_micros = absl::ToInt64Microseconds(sm_.sessions().options().session_ttl);
  const int64_t later = std::max(sm_.clock_unix_micros(), NowMicros()) + ttl_micros + 1000000;
  kv::pb::KvCommand noop;
  noop.set_op(kv::pb::OP_GET);
  noop.set_key("expire-sessions");
  if (!ApplyLocked(rsm::EncodeCommand(nullptr, noop.SerializeAsString(), later)).ok()) {
    std::abort();  // the fake is broken
  }
}

void FakeKvCluster::Dispatch(int replica, Call call, std::function<void()> fn) {
  absl::Duration delay;
  {
    absl::MutexLock lock(&mu_);
    switch (call) {
      case Call::kKv:
        ++kv_calls_[replica];
        break;
      case Call::kStatus:
        ++status_calls_[replica];
        break;
      case Call::kRegister:
        ++register_calls_[replica];
        break;
    }
    if (slow_calls_[replica] > 0) {
      --slow_calls_[replica];
      delay = slow_delay_[replica];
    }
    if (delay > absl::ZeroDuration()) ++delayed_calls_;
  }
  if (delay <= absl::ZeroDuration()) return fn();
  timer_.RunAt(absl::Now() + delay, [this, fn = std::move(fn)] {
    fn();
    absl::MutexLock lock(&mu_);
    --delayed_calls_;
  });
}

bool FakeKvCluster::WaitForDelayedCalls(absl::Duration limit) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(
                                  +[](int* n) { return *n == 0; }, &delayed_calls_),
                              limit);
}

void FakeKvCluster::HandleKv(int replica, KvRequest req, std::function<void(KvResponse)> done) {
  Dispatch(replica, Call::kKv, [this, replica, req = std::move(req), done = std::move(done)] {
    done(ExecuteKv(replica, req));
  });
}

bool FakeKvCluster::RefuseUnlessLeader(int replica, rsm::pb::ReplyStatus* reply) const {
  if (leader_ == replica) return false;
  // As requests.h: a replica that is not the leader refuses before proposing.
  reply->set_code(static_cast<int>(absl::StatusCode::kUnavailable));
  reply->set_message("not the leader");
  reply->set_not_applied(true);
  if (send_hints_ && leader_ >= 0) {
    reply->set_leader_id(leader_ + 1);
    reply->set_leader_address(addresses_[leader_]);
  }
  return true;
}

absl::StatusOr<std::string> FakeKvCluster::ApplyLocked(const std::string& entry) {
  return sm_.Apply(entry, ++last_index_);
}

void FakeKvCluster::MaybeLoseReply(rsm::pb::ReplyStatus* reply) {
  if (lose_replies_ == 0) return;
  --lose_replies_;
  reply->Clear();
  reply->set_code(static_cast<int>(absl::StatusCode::kUnavailable));
  reply->set_message("leadership lost before the answer (reply lost)");
  if (expire_after_lost_reply_) ExpireSessionsLocked();
}

KvResponse FakeKvCluster::ExecuteKv(int replica, KvRequest req) {
  KvResponse resp;
  resp.set_id(req.id());
  auto fill_header = [&](rsm::pb::ResponseHeader* h) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    h->set_member_id(replica + 1);
    h->set_term(kTerm);
    h->set_applied_index(last_index_);
  };

  if (req.op_case() == KvRequest::kGet) {
    if (req.get().key().empty()) {
      FillError(absl::InvalidArgumentError("empty key"), resp.mutable_status());
      return resp;
    }
    absl::MutexLock lock(&mu_);
    if (RefuseUnlessLeader(replica, resp.mutable_status())) return resp;
    kv::pb::KvResult result = app_.kv.Get(req.get().key());
    kv::pb::GetResponse* g = resp.mutable_get();
    g->set_found(result.found());
    g->set_value(result.value());
    fill_header(g->mutable_header());
    return resp;
  }

  kv::pb::KvCommand cmd;
  rsm::pb::SessionRef session;
  switch (req.op_case()) {
    case KvRequest::kPut:
      cmd.set_op(kv::pb::OP_PUT);
      cmd.set_key(req.put().key());
      cmd.set_value(req.put().value());
      session = req.put().session();
      break;
    case KvRequest::kAppend:
      cmd.set_op(kv::pb::OP_APPEND);
      cmd.set_key(req.append().key());
      cmd.set_value(req.append().value());
      session = req.append().session();
      break;
    case KvRequest::kDelete:
      cmd.set_op(kv::pb::OP_DELETE);
      cmd.set_key(req.delete_().key());
      session = req.delete_().session();
      break;
    default:
      FillError(absl::InvalidArgumentError("request without an operation"), resp.mutable_status());
      return resp;
  }
  if (cmd.key().empty()) {
    FillError(absl::InvalidArgumentError("empty key"), resp.mutable_status());
    return resp;
  }
  if (session.client_id() == 0 || session.sequence() == 0 || session.created_unix_micros() <= 0) {
    FillError(absl::InvalidArgumentError(
                  "writes need a session: nonzero client_id, created_unix_micros and sequence"),
              resp.mutable_status());
    return resp;
  }

  absl::MutexLock lock(&mu_);
  if (RefuseUnlessLeader(replica, resp.mutable_status())) return resp;
  absl::StatusOr<std::string> r =
      ApplyLocked(rsm::EncodeCommand(&session, cmd.SerializeAsString(), NowMicros()));
  FillError(r.status(), resp.mutable_status());
  MaybeLoseReply(resp.mutable_status());
  if (resp.status().code() != 0) return resp;  // a failed call carries no result
  kv::pb::KvResult result;
  result.ParseFromString(*r);  // KvStateMachine's bytes, or the session's cached copy
  switch (cmd.op()) {
    case kv::pb::OP_PUT:
      fill_header(resp.mutable_put()->mutable_header());
      break;
    case kv::pb::OP_APPEND:
      fill_header(resp.mutable_append()->mutable_header());
      break;
    default:
      resp.mutable_delete_()->set_found(result.found());
      fill_header(resp.mutable_delete_()->mutable_header());
      break;
  }
  return resp;
}

void FakeKvCluster::FillStatus(int replica, rsm::pb::StatusResponse* resp) const {
  absl::MutexLock lock(&mu_);
  resp->set_id(replica + 1);
  resp->set_role(leader_ == replica ? rsm::pb::ROLE_LEADER : rsm::pb::ROLE_FOLLOWER);
  resp->set_term(kTerm);
  if (leader_ >= 0 && (leader_ == replica || send_hints_)) {
    resp->set_leader_id(leader_ + 1);
    resp->set_leader_address(addresses_[leader_]);
  }
  resp->set_commit_index(last_index_);
  resp->set_applied_index(last_index_);
  resp->set_sessions(sm_.sessions().size());
  resp->set_service("kvraft");
}

int FakeKvCluster::kv_calls(int replica) const {
  absl::MutexLock lock(&mu_);
  return kv_calls_[replica];
}

int FakeKvCluster::status_calls(int replica) const {
  absl::MutexLock lock(&mu_);
  return status_calls_[replica];
}

int FakeKvCluster::register_calls(int replica) const {
  absl::MutexLock lock(&mu_);
  return register_calls_[replica];
}

int FakeKvCluster::applied_writes() const {
  absl::MutexLock lock(&mu_);
  return app_.applied;
}

int FakeKvCluster::sessions_used() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(app_.sessions.size());
}

uint64_t FakeKvCluster::log_entries() const {
  absl::MutexLock lock(&mu_);
  return last_index_;
}

int64_t FakeKvCluster::open_sessions() const {
  absl::MutexLock lock(&mu_);
  return sm_.sessions().size();
}

int64_t FakeKvCluster::session_watermark_unix_micros() const {
  absl::MutexLock lock(&mu_);
  return sm_.sessions().watermark_unix_micros();
}

std::string FakeKvCluster::value(const std::string& key) const {
  absl::MutexLock lock(&mu_);
  return app_.kv.Get(key).value();
}

}  // namespace ds::client::testing
