#include "client/clerk.h"

#include <algorithm>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "proto/health.grpc.pb.h"

namespace ds::client {
namespace {

// Errors that another replica or a later attempt cannot fix.
bool IsFinal(grpc::StatusCode code) {
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

Clerk::Clerk(ClerkOptions options)
    : options_(std::move(options)), client_id_([this] {
        if (options_.client_id != 0) return options_.client_id;
        absl::BitGen gen;
        uint64_t id = 0;
        while (id == 0) id = absl::Uniform<uint64_t>(gen);
        return id;
      }()) {
  stubs_.resize(options_.endpoints.size());
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
absl::Status Clerk::WithRetries(const char* op, Attempt attempt) {
  const absl::Time deadline = absl::Now() + options_.operation_timeout;
  const size_t n = options_.endpoints.size();
  absl::Duration backoff = options_.initial_backoff;
  absl::BitGen jitter;
  size_t failures_this_round = 0;
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
    if (IsFinal(st.error_code())) {
      return common::FromGrpcStatus(grpc::Status(st.error_code(), last_error));
    }
    // Not the leader, timed out or unreachable: follow the hint if it names a
    // replica we know, else try the next one.
    std::string hint =
        st.error_code() == grpc::StatusCode::UNAVAILABLE ? LeaderHint(ctx) : std::string();
    auto it = std::find(options_.endpoints.begin(), options_.endpoints.end(), hint);
    if (!hint.empty() && it != options_.endpoints.end() &&
        static_cast<size_t>(it - options_.endpoints.begin()) != target) {
      leader_ = it - options_.endpoints.begin();
    } else {
      leader_ = (target + 1) % n;
    }
    // Back off once every replica has failed (a round), so an election in
    // progress is not hammered; hints count too, bounding a stale-hint loop.
    if (++failures_this_round >= n) {
      failures_this_round = 0;
      absl::Duration sleep = backoff * absl::Uniform(jitter, 0.5, 1.5);
      absl::SleepFor(std::min(sleep, deadline - absl::Now()));
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
  }
}

absl::StatusOr<GetResult> Clerk::Get(const std::string& key) {
  absl::MutexLock lock(&mu_);
  kv::pb::GetRequest req;
  req.set_key(key);
  req.set_client_id(client_id_);
  kv::pb::GetResponse resp;
  absl::Status st =
      WithRetries("get", [&](kv::pb::KvService::Stub* stub, grpc::ClientContext* ctx) {
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
  req.set_client_id(client_id_);
  // A sequence number is used once, whatever the outcome: after a timeout the
  // command may still be applied later, so the next command must not reuse it.
  req.set_sequence(next_sequence_++);
  kv::pb::PutResponse resp;
  return WithRetries("put", [&](kv::pb::KvService::Stub* stub, grpc::ClientContext* ctx) {
    return stub->Put(ctx, req, &resp);
  });
}

absl::Status Clerk::Append(const std::string& key, const std::string& value) {
  absl::MutexLock lock(&mu_);
  kv::pb::AppendRequest req;
  req.set_key(key);
  req.set_value(value);
  req.set_client_id(client_id_);
  req.set_sequence(next_sequence_++);
  kv::pb::AppendResponse resp;
  return WithRetries("append", [&](kv::pb::KvService::Stub* stub, grpc::ClientContext* ctx) {
    return stub->Append(ctx, req, &resp);
  });
}

absl::StatusOr<bool> Clerk::Delete(const std::string& key) {
  absl::MutexLock lock(&mu_);
  kv::pb::DeleteRequest req;
  req.set_key(key);
  req.set_client_id(client_id_);
  req.set_sequence(next_sequence_++);
  kv::pb::DeleteResponse resp;
  absl::Status st =
      WithRetries("del", [&](kv::pb::KvService::Stub* stub, grpc::ClientContext* ctx) {
        return stub->Delete(ctx, req, &resp);
      });
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
