#include "client/replica_client.h"

#include <algorithm>
#include <deque>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "proto/health.grpc.pb.h"

namespace ds::client {

// ---- Replies ----

Reply ToReply(const rsm::pb::ReplyStatus& s) {
  Reply r;
  if (s.code() != 0) r.status = absl::Status(static_cast<absl::StatusCode>(s.code()), s.message());
  r.leader_id = s.leader_id();
  r.leader_address = s.leader_address();
  r.not_applied = s.not_applied();
  r.session_watermark_unix_micros = s.session_watermark_unix_micros();
  return r;
}

rsm::pb::ReplyStatus ToReplyStatus(const grpc::Status& status, const grpc::ClientContext& ctx) {
  rsm::pb::ReplyStatus out;
  out.set_code(status.error_code());
  if (status.ok()) return out;
  out.set_message(status.error_message());
  const auto& md = ctx.GetServerTrailingMetadata();
  auto get = [&md](const char* key) -> std::string {
    auto it = md.find(key);
    return it == md.end() ? "" : std::string(it->second.data(), it->second.size());
  };
  uint64_t id = 0;
  if (absl::SimpleAtoi(get("ds-leader-id"), &id)) out.set_leader_id(id);
  out.set_leader_address(get("ds-leader-address"));
  out.set_not_applied(get("ds-not-applied") == "1");
  int64_t watermark = 0;
  if (absl::SimpleAtoi(get("ds-session-watermark"), &watermark)) {
    out.set_session_watermark_unix_micros(watermark);
  }
  return out;
}

const char* RoleName(rsm::pb::Role role) {
  switch (role) {
    case rsm::pb::ROLE_FOLLOWER:
      return "follower";
    case rsm::pb::ROLE_PRE_CANDIDATE:
      return "pre-candidate";
    case rsm::pb::ROLE_CANDIDATE:
      return "candidate";
    case rsm::pb::ROLE_LEADER:
      return "leader";
    case rsm::pb::ROLE_LEARNER:
      return "learner";
    default:
      return "unknown";
  }
}

bool IsFinalError(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kResourceExhausted:
      return true;
    default:
      return false;
  }
}

// ---- LeaderCache ----

size_t LeaderCache::Get() const {
  absl::MutexLock lock(&mu_);
  return leader_;
}

void LeaderCache::Set(size_t i) {
  absl::MutexLock lock(&mu_);
  leader_ = i;
}

void LeaderCache::Forget(size_t i) {
  absl::MutexLock lock(&mu_);
  if (leader_ == i) leader_ = kUnknown;
}

void LeaderCache::Learn(uint64_t id, size_t i) {
  if (id == 0) return;
  absl::MutexLock lock(&mu_);
  ids_[id] = i;
}

size_t LeaderCache::Find(uint64_t id, const std::string& address) const {
  if (!address.empty()) {
    auto it = std::find(endpoints_.begin(), endpoints_.end(), address);
    if (it != endpoints_.end()) return it - endpoints_.begin();
  }
  if (id == 0) return kUnknown;
  absl::MutexLock lock(&mu_);
  auto it = ids_.find(id);
  return it == ids_.end() ? kUnknown : it->second;
}

// ---- RetryBackoff ----

absl::Duration RetryBackoff::OnFailure(size_t replicas) {
  if (++failures_this_round_ < replicas) return absl::ZeroDuration();
  return OnRoundFailed();
}

absl::Duration RetryBackoff::OnRoundFailed() {
  failures_this_round_ = 0;
  absl::BitGen jitter;
  absl::Duration sleep = backoff_ * absl::Uniform(jitter, 0.5, 1.5);
  backoff_ = std::min(backoff_ * 2, max_);
  return sleep;
}

// ---- RetryingCall ----

namespace {
// How deep attempts that complete inline may nest before the next one is
// handed to the transport's timer thread instead (a transport that fails at
// once, e.g. a closing connection, would otherwise recurse until the deadline).
constexpr int kMaxInlineDepth = 16;
thread_local int inline_depth = 0;
}  // namespace

RetryingCall::RetryingCall(ReplicaTransport* transport, std::shared_ptr<LeaderCache> leader,
                           const RetryOptions& options, const char* name, ClientSession* session)
    : transport_(transport),
      leader_(std::move(leader)),
      options_(options),
      name_(name),
      session_(session),
      backoff_(options) {}

void RetryingCall::Start(bool taken_over) {
  deadline_ = absl::Now() + options_.operation_timeout;
  if (session_ != nullptr) ref_ = session_->Next();
  if (!taken_over) Next();
}

void RetryingCall::Next() {
  if (absl::Now() >= deadline_) {
    Reply r;
    r.status = absl::DeadlineExceededError(
        absl::StrCat(name_, ": no answer within ", absl::FormatDuration(options_.operation_timeout),
                     "; last error: ", last_error_));
    return Finish(std::move(r));
  }
  const size_t target = leader_->Get();
  if (target == LeaderCache::kUnknown || target >= n()) return Probe();
  Attempt(target);
}

void RetryingCall::Attempt(size_t replica) {
  target_ = replica;
  ++inline_depth;
  Send(replica, std::min(deadline_, absl::Now() + options_.attempt_timeout));
  --inline_depth;
}

void RetryingCall::Later(absl::Duration pause) {
  if (pause <= absl::ZeroDuration() && inline_depth < kMaxInlineDepth) return Next();
  auto self = shared_from_this();
  transport_->RunAt(std::min(absl::Now() + pause, deadline_), [self] { self->Next(); });
}

void RetryingCall::OnReply(Reply r) {
  const size_t i = target_;
  if (r.status.ok()) {
    leader_->Set(i);
    return Finish(std::move(r));
  }
  last_error_ = absl::StrCat(leader_->endpoints()[i], ": ", r.status.message());
  if (IsFinalError(r.status.code())) {
    r.status = absl::Status(r.status.code(), last_error_);
    if (Reroute(r, /*round_failed=*/false)) return;
    return Finish(std::move(r));
  }
  // Not the leader, timed out or unreachable. Unless the replica says it
  // proposed nothing, this attempt may yet be applied.
  if (!r.not_applied) maybe_applied_ = true;
  const size_t hint = r.status.code() == absl::StatusCode::kUnavailable
                          ? leader_->Find(r.leader_id, r.leader_address)
                          : LeaderCache::kUnknown;
  if (hint != LeaderCache::kUnknown && hint != i) {
    leader_->Set(hint);
  } else {
    leader_->Forget(i);
  }
  const absl::Duration pause = backoff_.OnFailure(n());
  if (pause > absl::ZeroDuration() && Reroute(r, /*round_failed=*/true)) return;
  Later(pause);
}

void RetryingCall::Retarget(ReplicaTransport* transport, std::shared_ptr<LeaderCache> leader) {
  absl::MutexLock lock(&mu_);
  ++probe_round_;  // answers of a search at the old group are ignored
  probe_settled_ = true;
  transport_ = transport;
  leader_ = std::move(leader);
}

void RetryingCall::Resume(absl::Duration pause) {
  // No pause: the next attempt goes out from this thread (within the inline
  // depth bound), not through the transport's timer, whose tick (KvPool: 5 ms)
  // would be added to every routed operation.
  Later(pause);
}

// Asks every replica at once who leads; the first that names a leader wins.
void RetryingCall::Probe() {
  uint64_t round;
  const size_t count = n();
  ReplicaTransport* const transport = transport_;
  {
    absl::MutexLock lock(&mu_);
    round = ++probe_round_;
    probes_pending_ = count;
    probe_settled_ = false;
    probe_launching_ = true;
    probe_outcome_.reset();
  }
  const absl::Time deadline = std::min(deadline_, absl::Now() + options_.attempt_timeout);
  auto self = shared_from_this();
  for (size_t i = 0; i < count; ++i) {
    transport->Probe(i, deadline, [self, round, i](absl::StatusOr<rsm::pb::StatusResponse> s) {
      self->OnProbe(round, i, std::move(s));
    });
  }
  std::optional<std::pair<size_t, std::string>> outcome;
  {
    absl::MutexLock lock(&mu_);
    probe_launching_ = false;
    if (round == probe_round_) outcome = std::move(probe_outcome_);
    probe_outcome_.reset();
  }
  // Settled while the probes went out: this thread continues the chain.
  if (outcome) AfterProbe(outcome->first, std::move(outcome->second));
}

void RetryingCall::OnProbe(uint64_t round, size_t i, absl::StatusOr<rsm::pb::StatusResponse> s) {
  size_t found = LeaderCache::kUnknown;
  bool give_up = false;
  std::string why;
  {
    absl::MutexLock lock(&mu_);
    if (round != probe_round_ || probe_settled_) return;
    if (s.ok()) {
      leader_->Learn(s->id(), i);
      found = s->role() == rsm::pb::ROLE_LEADER
                  ? i
                  : leader_->Find(s->leader_id(), s->leader_address());
    }
    if (!s.ok()) probe_error_ = absl::StrCat(leader_->endpoints()[i], ": ", s.status().message());
    if (found != LeaderCache::kUnknown) {
      probe_settled_ = true;
    } else if (--probes_pending_ == 0) {
      probe_settled_ = true;
      give_up = true;
      why = probe_error_;
    }
    if ((found != LeaderCache::kUnknown || give_up) && probe_launching_) {
      probe_outcome_.emplace(found, std::move(why));  // Probe() continues
      return;
    }
  }
  // Settled: this thread alone continues the chain.
  if (found != LeaderCache::kUnknown || give_up) AfterProbe(found, std::move(why));
}

void RetryingCall::AfterProbe(size_t found, std::string why) {
  if (found != LeaderCache::kUnknown) {
    leader_->Set(found);
    Attempt(found);
  } else {
    last_error_ = why.empty() ? "no replica knows a leader (election in progress?)"
                              : absl::StrCat("no leader found; ", why);
    Reply r;
    r.status = absl::UnavailableError(last_error_);
    const absl::Duration pause = backoff_.OnRoundFailed();
    if (Reroute(r, /*round_failed=*/true)) return;
    Later(pause);
  }
}

void RetryingCall::Finish(Reply r) {
  if (session_ != nullptr && r.status.code() == absl::StatusCode::kAborted) {
    // The servers never saw this session, or forgot it: start a new one. If
    // no attempt can have been applied (every earlier one was refused before
    // proposing), sending the command under the new session cannot apply it
    // twice: the usual case is a new client whose clock is behind the
    // watermark, or an idle client whose session expired.
    session_->Renew(ref_, r.session_watermark_unix_micros);
    if (!maybe_applied_ && !resent_ && absl::Now() < deadline_) {
      resent_ = true;
      ref_ = session_->Next();
      return Next();
    }
  }
  Done(std::move(r));
}

// ---- Sessions ----

ClientSession::ClientSession(SessionState resume) {
  absl::MutexLock lock(&mu_);
  if (resume.client_id != 0) {
    state_ = resume;
  } else {
    StartLocked(0);
  }
}

void ClientSession::StartLocked(int64_t after_unix_micros) {
  absl::BitGen gen;
  uint64_t id = 0;
  while (id == 0) id = absl::Uniform<uint64_t>(gen);
  state_.client_id = id;
  state_.created_unix_micros = std::max(absl::ToUnixMicros(absl::Now()), after_unix_micros + 1);
  state_.last_sequence = 0;
}

rsm::pb::SessionRef ClientSession::Next() {
  absl::MutexLock lock(&mu_);
  rsm::pb::SessionRef ref;
  ref.set_client_id(state_.client_id);
  ref.set_created_unix_micros(state_.created_unix_micros);
  // A sequence number is used once, whatever the outcome: after a timeout the
  // command may still be applied later, so the next command must not reuse it.
  ref.set_sequence(++state_.last_sequence);
  return ref;
}

void ClientSession::Renew(const rsm::pb::SessionRef& ref, int64_t watermark_unix_micros) {
  absl::MutexLock lock(&mu_);
  if (state_.client_id != ref.client_id()) return;  // renewed already
  StartLocked(watermark_unix_micros);
}

SessionState ClientSession::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

// ---- gRPC helpers ----

absl::StatusOr<std::vector<std::string>> ParseEndpoints(const std::string& list) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    std::string e(absl::StripAsciiWhitespace(part));
    size_t colon = e.rfind(':');
    int port = 0;
    if (colon == std::string::npos || colon == 0 ||
        !absl::SimpleAtoi(absl::string_view(e).substr(colon + 1), &port) || port <= 0 ||
        port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("bad endpoint '", e, "': want HOST:PORT"));
    }
    out.push_back(e);
  }
  if (out.empty()) return absl::InvalidArgumentError("no endpoints given");
  return out;
}

std::shared_ptr<grpc::Channel> MakeChannel(
    const std::string& endpoint, int connection_id,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  grpc::ChannelArguments args;
  // A replica that was down should be retried within a second of coming back,
  // not after gRPC's default backoff of up to two minutes.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  // gRPC shares one connection among channels with equal arguments; a distinct
  // argument value gives a channel its own.
  args.SetInt("ds.connection_id", connection_id);
  return grpc::CreateCustomChannel(
      endpoint, credentials != nullptr ? credentials : grpc::InsecureChannelCredentials(), args);
}

void CallTracker::Close() {
  absl::MutexLock lock(&mu_);
  closing_ = true;
  for (auto& [ptr, ctx] : calls_) ctx->TryCancel();
  mu_.Await(absl::Condition(
      +[](absl::flat_hash_map<grpc::ClientContext*, std::unique_ptr<grpc::ClientContext>>* c) {
        return c->empty();
      },
      &calls_));
}

grpc::ClientContext* CallTracker::Begin() {
  absl::MutexLock lock(&mu_);
  if (closing_) return nullptr;
  auto ctx = std::make_unique<grpc::ClientContext>();
  grpc::ClientContext* raw = ctx.get();
  calls_.emplace(raw, std::move(ctx));
  return raw;
}

void CallTracker::Finish(grpc::ClientContext* ctx) {
  // The context goes while the lock is held: it holds a reference to its
  // channel, and once Close() sees the call gone the owner may drop the
  // channel; the last reference must not be dropped on gRPC's own callback
  // thread (gRPC 1.51 then joins that thread from itself).
  absl::MutexLock lock(&mu_);
  calls_.erase(ctx);
}

void ProbeReplica(rsm::pb::Replica::Stub* stub, CallTracker* calls, absl::Time deadline,
                  std::function<void(absl::StatusOr<rsm::pb::StatusResponse>)> done) {
  grpc::ClientContext* ctx = calls->Begin();
  if (ctx == nullptr) return done(absl::UnavailableError("client closing"));
  ctx->set_deadline(absl::ToChronoTime(deadline));
  struct Call {
    rsm::pb::StatusRequest req;
    rsm::pb::StatusResponse resp;
  };
  auto call = std::make_shared<Call>();
  stub->async()->Status(
      ctx, &call->req, &call->resp, [calls, ctx, call, done = std::move(done)](grpc::Status st) {
        absl::StatusOr<rsm::pb::StatusResponse> r =
            st.ok()
                ? absl::StatusOr<rsm::pb::StatusResponse>(std::move(call->resp))
                : absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
        done(std::move(r));
        calls->Finish(ctx);  // last: the tracker's owner may now go away
      });
}

}  // namespace ds::client

namespace ds::client {

GrpcReplicas::GrpcReplicas(std::vector<std::string> endpoints,
                           std::vector<std::shared_ptr<grpc::Channel>> channels,
                           std::shared_ptr<grpc::ChannelCredentials> credentials)
    : endpoints_(std::move(endpoints)), channels_(std::move(channels)) {
  if (channels_.size() != endpoints_.size()) {
    channels_.clear();
    for (const std::string& e : endpoints_) channels_.push_back(MakeChannel(e, 0, credentials));
  }
  for (const auto& ch : channels_) replica_.push_back(rsm::pb::Replica::NewStub(ch));
}

void GrpcReplicas::Probe(size_t i, absl::Time deadline,
                         std::function<void(absl::StatusOr<rsm::pb::StatusResponse>)> done) {
  ProbeReplica(replica_[i].get(), &calls_, deadline, std::move(done));
}

void GrpcReplicas::RunAt(absl::Time when, std::function<void()> fn) {
  timer_.RunAt(when, std::move(fn));
}

void GrpcReplicas::Call(absl::Time deadline, StartFn start,
                        std::function<void(rsm::pb::ReplyStatus)> done) {
  grpc::ClientContext* ctx = calls_.Begin();
  if (ctx == nullptr) {
    rsm::pb::ReplyStatus closing;
    closing.set_code(grpc::StatusCode::UNAVAILABLE);
    closing.set_message("clerk closing");
    return done(std::move(closing));
  }
  ctx->set_deadline(absl::ToChronoTime(deadline));
  start(ctx, [this, ctx, done = std::move(done)](grpc::Status st) {
    done(ToReplyStatus(st, *ctx));
    calls_.Finish(ctx);  // last: the clerk may now go away
  });
}

absl::StatusOr<rsm::pb::StatusResponse> ReplicaStatus(
    const std::string& endpoint, absl::Duration timeout,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  auto stub = rsm::pb::Replica::NewStub(MakeChannel(endpoint, 0, credentials));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  rsm::pb::StatusResponse resp;
  grpc::Status st = stub->Status(&ctx, rsm::pb::StatusRequest(), &resp);
  if (!st.ok()) {
    return common::FromGrpcStatus(
        grpc::Status(st.error_code(), absl::StrCat(endpoint, ": ", st.error_message())));
  }
  return resp;
}

absl::Status ReplicaHealth(const std::string& endpoint, absl::Duration timeout,
                           const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  auto stub = grpc::health::v1::Health::NewStub(MakeChannel(endpoint, 0, credentials));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status st = stub->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp);
  if (!st.ok()) {
    return common::FromGrpcStatus(
        grpc::Status(st.error_code(), absl::StrCat(endpoint, ": ", st.error_message())));
  }
  if (resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(absl::StrCat(endpoint, ": not serving"));
  }
  return absl::OkStatus();
}

}  // namespace ds::client

// ---- Membership ----

namespace ds::client {
namespace {

// The Replica service of every replica of one group, for the membership calls:
// leader probes, timer and tracked calls from GrpcReplicas.
class ReplicaAdminTransport final : public ReplicaTransport {
 public:
  ReplicaAdminTransport(const std::vector<std::string>& endpoints,
                        const std::shared_ptr<grpc::ChannelCredentials>& credentials)
      : grpc_(endpoints, {}, credentials) {
    for (size_t i = 0; i < grpc_.endpoints().size(); ++i) {
      stubs_.push_back(rsm::pb::Replica::NewStub(grpc_.channel(i)));
    }
  }

  const std::vector<std::string>& endpoints() const override { return grpc_.endpoints(); }
  void Probe(size_t i, absl::Time deadline,
             std::function<void(absl::StatusOr<rsm::pb::StatusResponse>)> done) override {
    grpc_.Probe(i, deadline, std::move(done));
  }
  void RunAt(absl::Time when, std::function<void()> fn) override {
    grpc_.RunAt(when, std::move(fn));
  }
  rsm::pb::Replica::Stub* stub(size_t i) { return stubs_[i].get(); }
  GrpcReplicas& grpc() { return grpc_; }

 private:
  std::vector<std::unique_ptr<rsm::pb::Replica::Stub>> stubs_;
  GrpcReplicas grpc_;  // destroyed first: cancels calls in flight, then the stubs go
};

template <typename Response>
struct AdminOutcome {
  absl::StatusOr<Response> response;
  // Some attempt ended with its outcome open (timed out, leadership lost):
  // it may have been applied.
  bool maybe_applied = false;
};

// One Replica call at the leader, retried by the clerks' engine (no session:
// membership changes are not deduplicated by the servers; see
// ChangeMembership).
template <typename Request, typename Response>
class AdminCall final : public RetryingCall {
 public:
  using Invoke = void (*)(rsm::pb::Replica::Stub*, grpc::ClientContext*, const Request*, Response*,
                          std::function<void(grpc::Status)>);
  // What an OK answer means: OK, or an error to retry elsewhere (an answer
  // that must come from the leader but did not). Null: OK.
  using Check = Reply (*)(const Response&);

  AdminCall(ReplicaAdminTransport* transport, const RetryOptions& options, const char* name,
            Request request, Invoke invoke, Check check,
            std::function<void(AdminOutcome<Response>)> done)
      : RetryingCall(transport, std::make_shared<LeaderCache>(transport->endpoints()), options,
                     name),
        transport_(transport),
        request_(std::move(request)),
        invoke_(invoke),
        check_(check),
        done_(std::move(done)) {}

 private:
  void Send(size_t replica, absl::Time deadline) override {
    response_.Clear();
    auto self = std::static_pointer_cast<AdminCall>(shared_from_this());
    transport_->grpc().Call(
        deadline,
        [self, replica](grpc::ClientContext* ctx, std::function<void(grpc::Status)> finish) {
          self->invoke_(self->transport_->stub(replica), ctx, &self->request_, &self->response_,
                        std::move(finish));
        },
        [self](rsm::pb::ReplyStatus status) {
          Reply r = ToReply(status);
          if (r.status.ok() && self->check_ != nullptr) r = self->check_(self->response_);
          if (!r.status.ok() && !IsFinalError(r.status.code()) && !r.not_applied) {
            self->maybe_applied_ = true;
          }
          self->OnReply(std::move(r));
        });
  }

  void Done(Reply reply) override {
    AdminOutcome<Response> out;
    out.response = reply.status.ok() ? absl::StatusOr<Response>(std::move(response_))
                                     : absl::StatusOr<Response>(std::move(reply.status));
    out.maybe_applied = maybe_applied_;
    done_(std::move(out));
  }

  ReplicaAdminTransport* const transport_;
  const Request request_;
  Response response_;
  const Invoke invoke_;
  const Check check_;
  const std::function<void(AdminOutcome<Response>)> done_;
  bool maybe_applied_ = false;  // touched by the attempt chain only
};

// Runs one AdminCall to its end.
template <typename Request, typename Response>
AdminOutcome<Response> RunAdminCall(const std::vector<std::string>& endpoints,
                                    const RetryOptions& options,
                                    const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                                    const char* name, Request request,
                                    typename AdminCall<Request, Response>::Invoke invoke,
                                    typename AdminCall<Request, Response>::Check check = nullptr) {
  ReplicaAdminTransport transport(endpoints, credentials);
  return Await<AdminOutcome<Response>>([&](std::function<void(AdminOutcome<Response>)> done) {
    std::make_shared<AdminCall<Request, Response>>(&transport, options, name, std::move(request),
                                                   invoke, check, std::move(done))
        ->Start();
  });
}

void InvokeMemberList(rsm::pb::Replica::Stub* stub, grpc::ClientContext* ctx,
                      const rsm::pb::MemberListRequest* req, rsm::pb::MemberListResponse* resp,
                      std::function<void(grpc::Status)> done) {
  stub->async()->MemberList(ctx, req, resp, std::move(done));
}
void InvokeMemberAdd(rsm::pb::Replica::Stub* stub, grpc::ClientContext* ctx,
                     const rsm::pb::MemberAddRequest* req, rsm::pb::MemberChangeResponse* resp,
                     std::function<void(grpc::Status)> done) {
  stub->async()->MemberAdd(ctx, req, resp, std::move(done));
}
void InvokeMemberPromote(rsm::pb::Replica::Stub* stub, grpc::ClientContext* ctx,
                         const rsm::pb::MemberPromoteRequest* req,
                         rsm::pb::MemberChangeResponse* resp,
                         std::function<void(grpc::Status)> done) {
  stub->async()->MemberPromote(ctx, req, resp, std::move(done));
}
void InvokeMemberRemove(rsm::pb::Replica::Stub* stub, grpc::ClientContext* ctx,
                        const rsm::pb::MemberRemoveRequest* req,
                        rsm::pb::MemberChangeResponse* resp,
                        std::function<void(grpc::Status)> done) {
  stub->async()->MemberRemove(ctx, req, resp, std::move(done));
}

// Any replica answers MemberList from its own view; only the leader's is
// sure to be the newest. Another replica's answer is a redirection to the
// leader it names. (A replica that does not fill in its own id in the header
// cannot be told from the leader: its answer is taken.)
Reply FromLeaderOnly(const rsm::pb::MemberListResponse& r) {
  Reply out;
  const uint64_t self = r.header().member_id();
  if (self == 0 || r.leader_id() == self) return out;
  out.status = absl::UnavailableError(
      r.leader_id() == 0 ? std::string("no leader known")
                         : absl::StrCat("not the leader (", r.leader_id(), " is)"));
  out.leader_id = r.leader_id();
  out.not_applied = true;
  return out;
}

// Whether `members` shows `change` made.
bool ChangeMade(const MemberChange& change,
                const google::protobuf::RepeatedPtrField<rsm::pb::Member>& members) {
  const rsm::pb::Member* member = nullptr;
  for (const rsm::pb::Member& m : members) {
    if (m.id() == change.id) member = &m;
  }
  switch (change.kind) {
    case MemberChange::Kind::kAdd:
      return member != nullptr && member->address() == change.address &&
             member->learner() == change.learner;
    case MemberChange::Kind::kPromote:
      return member != nullptr && !member->learner();
    case MemberChange::Kind::kRemove:
      return member == nullptr;
  }
  return false;
}

}  // namespace

absl::StatusOr<rsm::pb::MemberListResponse> ReplicaMemberList(
    const std::string& endpoint, absl::Duration timeout,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  auto stub = rsm::pb::Replica::NewStub(MakeChannel(endpoint, 0, credentials));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  rsm::pb::MemberListResponse resp;
  grpc::Status st = stub->MemberList(&ctx, rsm::pb::MemberListRequest(), &resp);
  if (!st.ok()) {
    return common::FromGrpcStatus(
        grpc::Status(st.error_code(), absl::StrCat(endpoint, ": ", st.error_message())));
  }
  return resp;
}

absl::StatusOr<rsm::pb::MemberListResponse> LeaderMemberList(
    const std::vector<std::string>& endpoints, const RetryOptions& options,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  return RunAdminCall<rsm::pb::MemberListRequest, rsm::pb::MemberListResponse>(
             endpoints, options, credentials, "member list", rsm::pb::MemberListRequest(),
             InvokeMemberList, FromLeaderOnly)
      .response;
}

absl::StatusOr<std::vector<rsm::pb::Member>> ChangeMembership(
    const std::vector<std::string>& endpoints, const MemberChange& change,
    const RetryOptions& options, const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  const absl::Time deadline = absl::Now() + options.operation_timeout;
  using Response = rsm::pb::MemberChangeResponse;
  AdminOutcome<Response> out;
  switch (change.kind) {
    case MemberChange::Kind::kAdd: {
      rsm::pb::MemberAddRequest req;
      req.set_id(change.id);
      req.set_address(change.address);
      req.set_learner(change.learner);
      out = RunAdminCall<rsm::pb::MemberAddRequest, Response>(
          endpoints, options, credentials, "member add", std::move(req), InvokeMemberAdd);
      break;
    }
    case MemberChange::Kind::kPromote: {
      rsm::pb::MemberPromoteRequest req;
      req.set_id(change.id);
      out = RunAdminCall<rsm::pb::MemberPromoteRequest, Response>(
          endpoints, options, credentials, "member promote", std::move(req), InvokeMemberPromote);
      break;
    }
    case MemberChange::Kind::kRemove: {
      rsm::pb::MemberRemoveRequest req;
      req.set_id(change.id);
      out = RunAdminCall<rsm::pb::MemberRemoveRequest, Response>(
          endpoints, options, credentials, "member remove", std::move(req), InvokeMemberRemove);
      break;
    }
  }
  if (out.response.ok()) {
    return std::vector<rsm::pb::Member>(out.response->members().begin(),
                                        out.response->members().end());
  }
  const absl::StatusCode code = out.response.status().code();
  if (!out.maybe_applied ||
      (code != absl::StatusCode::kAlreadyExists && code != absl::StatusCode::kNotFound &&
       code != absl::StatusCode::kFailedPrecondition)) {
    return out.response.status();
  }
  // The refusal may be of our own earlier attempt's doing: ask the leader.
  RetryOptions rest = options;
  rest.operation_timeout = std::max(deadline - absl::Now(), options.attempt_timeout);
  auto list = LeaderMemberList(endpoints, rest, credentials);
  if (!list.ok() || !ChangeMade(change, list->members())) return out.response.status();
  return std::vector<rsm::pb::Member>(list->members().begin(), list->members().end());
}

}  // namespace ds::client
