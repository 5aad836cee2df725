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
