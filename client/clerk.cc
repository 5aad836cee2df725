#include "client/clerk.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/status.h"

namespace ds::client {

using kv::pb::KvRequest;
using kv::pb::KvResponse;

RetryOptions ToRetryOptions(const ClerkOptions& o) {
  return {.operation_timeout = o.operation_timeout,
          .attempt_timeout = o.attempt_timeout,
          .initial_backoff = o.initial_backoff,
          .max_backoff = o.max_backoff};
}

absl::Status ValidateClerkOptions(const ClerkOptions& options) {
  if (options.endpoints.empty()) return absl::InvalidArgumentError("no endpoints given");
  for (const auto& e : options.endpoints) {
    if (auto parsed = ParseEndpoints(e); !parsed.ok()) return parsed.status();
  }
  if (!options.channels.empty() && options.channels.size() != options.endpoints.size()) {
    return absl::InvalidArgumentError("channels: want one per endpoint");
  }
  if (options.attempt_timeout <= absl::ZeroDuration() ||
      options.operation_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeouts must be positive");
  }
  return absl::OkStatus();
}

void GrpcKvTransport::Send(size_t i, KvRequest req, absl::Time deadline,
                           std::function<void(KvResponse)> done) {
  // The request and the response outlive the call.
  auto call = std::make_shared<std::pair<KvRequest, KvResponse>>(std::move(req), KvResponse());
  auto* stub = this->stub(i)->async();
  grpc().Call(
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
            finish(
                grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "request without an operation"));
        }
      },
      [call, done = std::move(done)](rsm::pb::ReplyStatus status) {
        *call->second.mutable_status() = std::move(status);
        done(std::move(call->second));
      });
}

absl::StatusOr<std::unique_ptr<Clerk>> Clerk::Create(ClerkOptions options) {
  if (absl::Status st = ValidateClerkOptions(options); !st.ok()) return st;
  return std::unique_ptr<Clerk>(new Clerk(std::move(options)));
}
Clerk::Clerk(ClerkOptions options)
    : options_(std::move(options)), transport_(std::make_unique<GrpcKvTransport>(options_)) {
  client_ = std::make_unique<KvClient>(transport_.get(),
                                       std::make_shared<LeaderCache>(options_.endpoints),
                                       ToRetryOptions(options_), options_.session);
}

Clerk::~Clerk() {
  // Cancels calls still in flight (late leader probes) before the client goes.
  transport_.reset();
}

absl::StatusOr<GetResult> Clerk::Get(const std::string& key) {
  OneOperationAtATime::Turn turn(turns_);
  return Await<absl::StatusOr<GetResult>>([&](auto cb) { client_->Get(key, std::move(cb)); });
}

absl::Status Clerk::Put(const std::string& key, const std::string& value) {
  OneOperationAtATime::Turn turn(turns_);
  return Await<absl::Status>([&](auto cb) { client_->Put(key, value, std::move(cb)); });
}

absl::Status Clerk::Append(const std::string& key, const std::string& value) {
  OneOperationAtATime::Turn turn(turns_);
  return Await<absl::Status>([&](auto cb) { client_->Append(key, value, std::move(cb)); });
}

absl::StatusOr<bool> Clerk::Delete(const std::string& key) {
  OneOperationAtATime::Turn turn(turns_);
  return Await<absl::StatusOr<bool>>([&](auto cb) { client_->Delete(key, std::move(cb)); });
}

absl::StatusOr<rsm::pb::StatusResponse> Clerk::EndpointStatus(const std::string& endpoint) {
  return ReplicaStatus(endpoint, options_.attempt_timeout, options_.credentials);
}

absl::Status Clerk::EndpointHealth(const std::string& endpoint) {
  return ReplicaHealth(endpoint, options_.attempt_timeout, options_.credentials);
}

}  // namespace ds::client
