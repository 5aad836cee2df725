#include "client/kv_client.h"

#include <utility>

namespace ds::client {

using kv::pb::KvRequest;
using kv::pb::KvResponse;

namespace {

// Writes carry the session's reference.
void StampKv(KvRequest& request, const rsm::pb::SessionRef& ref) {
  if (request.has_put()) {
    *request.mutable_put()->mutable_session() = ref;
  } else if (request.has_append()) {
    *request.mutable_append()->mutable_session() = ref;
  } else if (request.has_delete_()) {
    *request.mutable_delete_()->mutable_session() = ref;
  }
}

}  // namespace

KvClient::KvClient(KvTransport* transport, std::shared_ptr<LeaderCache> leader,
                   RetryOptions options, SessionState resume)
    : transport_(transport), leader_(std::move(leader)), options_(options), session_(resume) {}

void KvClient::Run(const char* name, KvRequest request, bool write, ResponseCallback done) {
  TypedCall<KvTransport, KvRequest, KvResponse>::Start(
      transport_, leader_, options_, name, write ? &session_ : nullptr, write ? StampKv : nullptr,
      std::move(request), std::move(done));
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
