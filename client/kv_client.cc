#include "client/kv_client.h"

#include <utility>

#include "absl/time/clock.h"

namespace ds::client {

using kv::pb::KvRequest;
using kv::pb::KvResponse;

namespace {

// Sends `request` to replica i and reports the response's status as a Reply,
// keeping the response for the caller.
void SendAttempt(KvTransport* transport, const KvRequest& request,
                 const std::shared_ptr<KvResponse>& out, size_t i, absl::Time deadline,
                 std::function<void(Reply)> done) {
  transport->Send(i, request, deadline, [out, done = std::move(done)](KvResponse resp) {
    Reply r = ToReply(resp.status());
    if (r.status.ok()) *out = std::move(resp);
    done(std::move(r));
  });
}

}  // namespace

KvClient::KvClient(KvTransport* transport, std::shared_ptr<LeaderCache> leader,
                   RetryOptions options, SessionState resume)
    : transport_(transport), leader_(std::move(leader)), options_(options), session_(resume) {}

void KvClient::Get(std::string key, std::function<void(absl::StatusOr<GetResult>)> done) {
  KvRequest req;
  req.mutable_get()->set_key(std::move(key));
  auto out = std::make_shared<KvResponse>();
  KvTransport* t = transport_;
  RunOperation(
      transport_, leader_, options_, "get", absl::Now() + options_.operation_timeout,
      [t, req = std::move(req), out](size_t i, absl::Time deadline,
                                     std::function<void(Reply)> cb) {
        SendAttempt(t, req, out, i, deadline, std::move(cb));
      },
      [out, done = std::move(done)](Reply r) {
        if (!r.status.ok()) return done(r.status);
        done(GetResult{out->get().found(), std::move(*out->mutable_get()->mutable_value())});
      });
}

void KvClient::Write(const char* name, KvRequest request, ResponseCallback done) {
  auto out = std::make_shared<KvResponse>();
  KvTransport* t = transport_;
  RunWrite(
      transport_, leader_, options_, &session_, name,
      [t, request = std::move(request), out](const rsm::pb::SessionRef& ref, size_t i,
                                             absl::Time deadline, std::function<void(Reply)> cb) {
        KvRequest req = request;
        if (req.has_put()) *req.mutable_put()->mutable_session() = ref;
        if (req.has_append()) *req.mutable_append()->mutable_session() = ref;
        if (req.has_delete_()) *req.mutable_delete_()->mutable_session() = ref;
        SendAttempt(t, req, out, i, deadline, std::move(cb));
      },
      [out, done = std::move(done)](Reply r) {
        if (!r.status.ok()) return done(r.status);
        done(std::move(*out));
      });
}

void KvClient::Put(std::string key, std::string value, std::function<void(absl::Status)> done) {
  KvRequest req;
  req.mutable_put()->set_key(std::move(key));
  req.mutable_put()->set_value(std::move(value));
  Write("put", std::move(req),
        [done = std::move(done)](absl::StatusOr<KvResponse> r) { done(r.status()); });
}

void KvClient::Append(std::string key, std::string value, std::function<void(absl::Status)> done) {
  KvRequest req;
  req.mutable_append()->set_key(std::move(key));
  req.mutable_append()->set_value(std::move(value));
  Write("append", std::move(req),
        [done = std::move(done)](absl::StatusOr<KvResponse> r) { done(r.status()); });
}

void KvClient::Delete(std::string key, std::function<void(absl::StatusOr<bool>)> done) {
  KvRequest req;
  req.mutable_delete_()->set_key(std::move(key));
  Write("del", std::move(req), [done = std::move(done)](absl::StatusOr<KvResponse> r) {
    if (!r.ok()) return done(r.status());
    done(r->delete_().found());
  });
}

}  // namespace ds::client
