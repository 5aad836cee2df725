#include "client/clerk.h"

#include <algorithm>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "proto/health.grpc.pb.h"

namespace ds::client {
bool IsFinalError(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::UNIMPLEMENTED:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return true;
    default:
      return false;
  }
}

size_t NextReplica(const std::vector<std::string>& endpoints, size_t target,
                   const std::string& hint) {
  auto it = std::find(endpoints.begin(), endpoints.end(), hint);
  if (!hint.empty() && it != endpoints.end() &&
      static_cast<size_t>(it - endpoints.begin()) != target) {
    return it - endpoints.begin();
  }
  return (target + 1) % endpoints.size();
}

absl::Duration RetryBackoff::OnFailure(size_t replicas) {
  if (++failures_this_round_ < replicas) return absl::ZeroDuration();
  failures_this_round_ = 0;
  absl::BitGen jitter;
  absl::Duration sleep = backoff_ * absl::Uniform(jitter, 0.5, 1.5);
  backoff_ = std::min(backoff_ * 2, max_);
  return sleep;
}

namespace {

std::string LeaderHint(const grpc::ClientContext& ctx) {
  const auto& md = ctx.GetServerTrailingMetadata();
  auto it = md.find("ds-leader-address");
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

}  // namespace

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

absl::StatusOr<std::unique_ptr<Clerk>> Clerk::Create(ClerkOptions options) {
  if (options.endpoints.empty()) return absl::InvalidArgumentError("no endpoints given");
  std::string joined;
  for (const auto& e : options.endpoints) absl::StrAppend(&joined, joined.empty() ? "" : ",", e);
  auto parsed = ParseEndpoints(joined);
  if (!parsed.ok()) return parsed.status();
  if (!options.channels.empty() && options.channels.size() != options.endpoints.size()) {
    return absl::InvalidArgumentError("channels: want one per endpoint");
  }
  if (options.attempt_timeout <= absl::ZeroDuration() ||
      options.operation_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeouts must be positive");
  }
  return std::unique_ptr<Clerk>(new Clerk(std::move(options)));
}

Clerk::Clerk(ClerkOptions options) : options_(std::move(options)) {
  absl::MutexLock lock(&mu_);
  stubs_.resize(options_.endpoints.size());
  if (options_.client_id != 0) {
    client_id_ = options_.client_id;
    last_sequence_ = options_.last_sequence;
  }
}

uint64_t Clerk::client_id() const {
  absl::MutexLock lock(&mu_);
  return client_id_;
}

uint64_t Clerk::last_sequence() const {
  absl::MutexLock lock(&mu_);
  return last_sequence_;
}

std::shared_ptr<grpc::Channel> MakeKvChannel(const std::string& endpoint, int connection_id) {
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
  return grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args);
}

kv::pb::KvService::Stub* Clerk::StubFor(size_t endpoint) {
  if (stubs_[endpoint] == nullptr) {
    stubs_[endpoint] = kv::pb::KvService::NewStub(options_.channels.empty()
                                                      ? MakeKvChannel(options_.endpoints[endpoint])
                                                      : options_.channels[endpoint]);
  }
  return stubs_[endpoint].get();
}

template <typename Attempt>
absl::Status Clerk::WithRetries(const char* op, absl::Time deadline, Attempt attempt) {
  const size_t n = options_.endpoints.size();
  RetryBackoff backoff(options_);
  std::string last_error = "no attempt made";
  while (true) {
    absl::Time now = absl::Now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(op, ": no answer within ", absl::FormatDuration(options_.operation_timeout),
                       "; last error: ", last_error));
    }
    const size_t target = leader_;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(std::min(deadline, now + options_.attempt_timeout)));
    grpc::Status st = attempt(StubFor(target), &ctx);
    if (st.ok()) return absl::OkStatus();
    last_error = absl::StrCat(options_.endpoints[target], ": ", st.error_message());
    if (IsFinalError(st.error_code())) {
      return common::FromGrpcStatus(grpc::Status(st.error_code(), last_error));
    }
    // Not the leader, timed out or unreachable.
    leader_ = NextReplica(
        options_.endpoints, target,
        st.error_code() == grpc::StatusCode::UNAVAILABLE ? LeaderHint(ctx) : std::string());
    if (absl::Duration pause = backoff.OnFailure(n); pause > absl::ZeroDuration()) {
      absl::SleepFor(std::min(pause, deadline - absl::Now()));
    }
  }
}

absl::Status Clerk::EnsureSession(absl::Time deadline) {
  if (client_id_ != 0) return absl::OkStatus();
  kv::pb::RegisterResponse resp;
  // Retrying a Register whose reply was lost opens a second session on the
  // servers; the first is never used and expires. That costs a table slot,
  // never a write applied twice.
  absl::Status st = WithRetries("register", deadline,
                                [&](kv::pb::KvService::Stub* stub, grpc::ClientContext* ctx) {
                                  return stub->Register(ctx, kv::pb::RegisterRequest(), &resp);
                                });
  if (!st.ok()) return st;
  if (resp.client_id() == 0) {
    return absl::InternalError("register: the server returned client id 0");
  }
  client_id_ = resp.client_id();
  last_sequence_ = 0;
  return absl::OkStatus();
}

template <typename Request, typename Call>
absl::Status Clerk::Write(const char* op, Request& req, Call call) {
  // Registering is part of the caller's first write: one deadline for both.
  const absl::Time deadline = absl::Now() + options_.operation_timeout;
  if (absl::Status st = EnsureSession(deadline); !st.ok()) return st;
  req.set_client_id(client_id_);
  // A sequence number is used once, whatever the outcome: after a timeout the
  // command may still be applied later, so the next command must not reuse it.
  req.set_sequence(++last_sequence_);
  absl::Status st =
      WithRetries(op, deadline, [&](kv::pb::KvService::Stub* stub, grpc::ClientContext* ctx) {
        return call(stub, ctx, req);
      });
  if (st.code() == absl::StatusCode::kFailedPrecondition) {
    // The servers forgot the session (expired or evicted). Drop it so that the
    // next write opens a new one, but do not re-send this write under a new
    // session: it may have been applied before the session was forgotten.
    client_id_ = 0;
    last_sequence_ = 0;
  }
  return st;
}

absl::StatusOr<GetResult> Clerk::Get(const std::string& key) {
  absl::MutexLock lock(&mu_);
  kv::pb::GetRequest req;
  req.set_key(key);
  req.set_client_id(client_id_);  // for tracing only; 0 before the first write
  kv::pb::GetResponse resp;
  absl::Status st = WithRetries("get", absl::Now() + options_.operation_timeout,
                                [&](kv::pb::KvService::Stub* stub, grpc::ClientContext* ctx) {
                                  return stub->Get(ctx, req, &resp);
                                });
  if (!st.ok()) return st;
  return GetResult{resp.found(), resp.value()};
}

absl::Status Clerk::Put(const std::string& key, const std::string& value) {
  absl::MutexLock lock(&mu_);
  kv::pb::PutRequest req;
  req.set_key(key);
  req.set_value(value);
  kv::pb::PutResponse resp;
  return Write("put", req,
               [&](kv::pb::KvService::Stub* stub, grpc::ClientContext* ctx,
                   const kv::pb::PutRequest& r) { return stub->Put(ctx, r, &resp); });
}

absl::Status Clerk::Append(const std::string& key, const std::string& value) {
  absl::MutexLock lock(&mu_);
  kv::pb::AppendRequest req;
  req.set_key(key);
  req.set_value(value);
  kv::pb::AppendResponse resp;
  return Write("append", req,
               [&](kv::pb::KvService::Stub* stub, grpc::ClientContext* ctx,
                   const kv::pb::AppendRequest& r) { return stub->Append(ctx, r, &resp); });
}

absl::StatusOr<bool> Clerk::Delete(const std::string& key) {
  absl::MutexLock lock(&mu_);
  kv::pb::DeleteRequest req;
  req.set_key(key);
  kv::pb::DeleteResponse resp;
  absl::Status st =
      Write("del", req,
            [&](kv::pb::KvService::Stub* stub, grpc::ClientContext* ctx,
                const kv::pb::DeleteRequest& r) { return stub->Delete(ctx, r, &resp); });
  if (!st.ok()) return st;
  return resp.found();
}

absl::StatusOr<kv::pb::StatusResponse> Clerk::EndpointStatus(const std::string& endpoint) {
  auto stub = kv::pb::KvService::NewStub(MakeKvChannel(endpoint));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.attempt_timeout));
  kv::pb::StatusResponse resp;
  grpc::Status st = stub->Status(&ctx, kv::pb::StatusRequest(), &resp);
  if (!st.ok()) {
    return common::FromGrpcStatus(
        grpc::Status(st.error_code(), absl::StrCat(endpoint, ": ", st.error_message())));
  }
  return resp;
}

absl::Status Clerk::EndpointHealth(const std::string& endpoint) {
  auto stub = grpc::health::v1::Health::NewStub(MakeKvChannel(endpoint));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.attempt_timeout));
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
