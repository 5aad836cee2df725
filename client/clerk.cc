#include "client/clerk.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/status.h"
#include "proto/health.grpc.pb.h"

namespace ds::client {

using kv::pb::KvRequest;
using kv::pb::KvResponse;

RetryOptions ToRetryOptions(const ClerkOptions& o) {
  return {.operation_timeout = o.operation_timeout,
          .attempt_timeout = o.attempt_timeout,
          .initial_backoff = o.initial_backoff,
          .max_backoff = o.max_backoff};
}

// Unary KvService calls over one channel per replica, with the callback API.
class Clerk::Transport final : public KvTransport {
 public:
  explicit Transport(const ClerkOptions& options) : grpc_(options.endpoints, options.channels) {
    for (size_t i = 0; i < grpc_.endpoints().size(); ++i) {
      kv_.push_back(kv::pb::KvService::NewStub(grpc_.channel(i)));
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

  void Send(size_t i, KvRequest req, absl::Time deadline,
            std::function<void(KvResponse)> done) override {
    // The request and the response outlive the call.
    auto call = std::make_shared<std::pair<KvRequest, KvResponse>>(std::move(req), KvResponse());
    auto* stub = kv_[i]->async();
    grpc_.Call(
        deadline,
        [stub, call](grpc::ClientContext* ctx, std::function<void(grpc::Status)> finish) {
          KvRequest& r = call->first;
          KvResponse& resp = call->second;
          switch (r.op_case()) {
            case KvRequest::kGet:
              return stub->Get(ctx, &r.get(), resp.mutable_get(), std::move(finish));
            case KvRequest::kPut:
              return stub->Put(ctx, &r.put(), resp.mutable_put(), std::move(finish));
            case KvRequest::kAppend:
              return stub->Append(ctx, &r.append(), resp.mutable_append(), std::move(finish));
            case KvRequest::kDelete:
              return stub->Delete(ctx, &r.delete_(), resp.mutable_delete_(), std::move(finish));
            default:
              finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                  "request without an operation"));
          }
        },
        [call, done = std::move(done)](rsm::pb::ReplyStatus status) {
          *call->second.mutable_status() = std::move(status);
          done(std::move(call->second));
        });
  }

 private:
  std::vector<std::unique_ptr<kv::pb::KvService::Stub>> kv_;
  GrpcReplicas grpc_;  // destroyed first: cancels calls in flight
};

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
    : options_(std::move(options)), transport_(std::make_unique<Transport>(options_)) {
  client_ = std::make_unique<KvClient>(transport_.get(),
                                       std::make_shared<LeaderCache>(options_.endpoints),
                                       ToRetryOptions(options_), options_.session);
}

Clerk::~Clerk() {
  // Cancels calls still in flight (late leader probes) before the client goes.
  transport_.reset();
}

namespace {

// Waits for an asynchronous result.
template <typename T>
struct Waiter {
  T result;
  absl::Notification done;
  T Wait() {
    done.WaitForNotification();
    return std::move(result);
  }
  auto Callback() {
    return [this](T r) {
      result = std::move(r);
      done.Notify();
    };
  }
};

}  // namespace

absl::StatusOr<GetResult> Clerk::Get(const std::string& key) {
  absl::MutexLock lock(&op_mu_);
  Waiter<absl::StatusOr<GetResult>> w;
  client_->Get(key, w.Callback());
  return w.Wait();
}

absl::Status Clerk::Put(const std::string& key, const std::string& value) {
  absl::MutexLock lock(&op_mu_);
  Waiter<absl::Status> w;
  client_->Put(key, value, w.Callback());
  return w.Wait();
}

absl::Status Clerk::Append(const std::string& key, const std::string& value) {
  absl::MutexLock lock(&op_mu_);
  Waiter<absl::Status> w;
  client_->Append(key, value, w.Callback());
  return w.Wait();
}

absl::StatusOr<bool> Clerk::Delete(const std::string& key) {
  absl::MutexLock lock(&op_mu_);
  Waiter<absl::StatusOr<bool>> w;
  client_->Delete(key, w.Callback());
  return w.Wait();
}

absl::StatusOr<rsm::pb::StatusResponse> Clerk::EndpointStatus(const std::string& endpoint) {
  auto stub = rsm::pb::Replica::NewStub(MakeChannel(endpoint));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.attempt_timeout));
  rsm::pb::StatusResponse resp;
  grpc::Status st = stub->Status(&ctx, rsm::pb::StatusRequest(), &resp);
  if (!st.ok()) {
    return common::FromGrpcStatus(
        grpc::Status(st.error_code(), absl::StrCat(endpoint, ": ", st.error_message())));
  }
  return resp;
}

absl::Status Clerk::EndpointHealth(const std::string& endpoint) {
  auto stub = grpc::health::v1::Health::NewStub(MakeChannel(endpoint));
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
