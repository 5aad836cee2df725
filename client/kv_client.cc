#include "client/kv_client.h"

#include <utility>

namespace ds::client {

using kv::pb::KvRequest;
using kv::pb::KvResponse;

namespace {

// One KV operation: the request, re-sent (stamped with the session's
// reference, for writes) until it succeeds; `done` gets the response.
class KvCall final : public RetryingCall {
 public:
  using DoneFn = std::function<void(absl::StatusOr<KvResponse>)>;

  KvCall(KvTransport* transport, std::shared_ptr<LeaderCache> leader, const RetryOptions& options,
         const char* name, ClientSession* session, KvRequest request, DoneFn done)
      : RetryingCall(transport, std::move(leader), options, name, session),
        transport_(transport),
        request_(std::move(request)),
        done_(std::move(done)) {}

 private:
  void Send(size_t replica, absl::Time deadline) override {
    if (request_.has_put()) {
      *request_.mutable_put()->mutable_session() = ref();
    } else if (request_.has_append()) {
      *request_.mutable_append()->mutable_session() = ref();
    } else if (request_.has_delete_()) {
      *request_.mutable_delete_()->mutable_session() = ref();
    }
    // The shared_ptr alone fits std::function's inline storage: no allocation.
    auto self = std::static_pointer_cast<KvCall>(shared_from_this());
    transport_->Send(replica, request_, deadline, [self](KvResponse resp) {
      Reply r = ToReply(resp.status());
      if (r.status.ok()) self->response_ = std::move(resp);
      self->OnReply(std::move(r));
    });
  }

  void Done(Reply reply) override {
    if (!reply.status.ok()) return done_(std::move(reply.status));
    done_(std::move(response_));
  }

  KvTransport* const transport_;
  KvRequest request_;
  KvResponse response_;
  const DoneFn done_;
};

}  // namespace

KvClient::KvClient(KvTransport* transport, std::shared_ptr<LeaderCache> leader,
                   RetryOptions options, SessionState resume)
    : transport_(transport), leader_(std::move(leader)), options_(options), session_(resume) {}

void KvClient::Run(const char* name, KvRequest request, bool write, ResponseCallback done) {
  std::make_shared<KvCall>(transport_, leader_, options_, name, write ? &session_ : nullptr,
                           std::move(request), std::move(done))
      ->Start();
}

void KvClient::Get(std::string key, std::function<void(absl::StatusOr<GetResult>)> done) {
  KvRequest req;
  req.mutable_get()->set_key(std::move(key));
  Run("get", std::move(req), false, [done = std::move(done)](absl::StatusOr<KvResponse> r) {
    if (!r.ok()) return done(r.status());
    done(GetResult{r->get().found(), std::move(*r->mutable_get()->mutable_value())});
  });
}

void KvClient::Put(std::string key, std::string value, std::function<void(absl::Status)> done) {
  KvRequest req;
  req.mutable_put()->set_key(std::move(key));
  req.mutable_put()->set_value(std::move(value));
  Run("put", std::move(req), true,
      [done = std::move(done)](absl::StatusOr<KvResponse> r) { done(r.status()); });
}

void KvClient::Append(std::string key, std::string value, std::function<void(absl::Status)> done) {
  KvRequest req;
  req.mutable_append()->set_key(std::move(key));
  req.mutable_append()->set_value(std::move(value));
  Run("append", std::move(req), true,
      [done = std::move(done)](absl::StatusOr<KvResponse> r) { done(r.status()); });
}

void KvClient::Delete(std::string key, std::function<void(absl::StatusOr<bool>)> done) {
  KvRequest req;
  req.mutable_delete_()->set_key(std::move(key));
  Run("del", std::move(req), true, [done = std::move(done)](absl::StatusOr<KvResponse> r) {
    if (!r.ok()) return done(r.status());
    done(r->delete_().found());
  });
}

}  // namespace ds::client
