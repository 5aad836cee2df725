#include "client/kv_client.h"

#include <utility>

namespace ds::client {

using kv::pb::KvRequest;
using kv::pb::KvResponse;

void StampKv(KvRequest& request, const rsm::pb::SessionRef& ref) {
  if (request.has_put()) {
    *request.mutable_put()->mutable_session() = ref;
  } else if (request.has_append()) {
    *request.mutable_append()->mutable_session() = ref;
  } else if (request.has_delete_()) {
    *request.mutable_delete_()->mutable_session() = ref;
  }
}

KvClient::KvClient(KvTransport* transport, std::shared_ptr<LeaderCache> leader,
                   RetryOptions options, SessionState resume)
    : transport_(transport), leader_(std::move(leader)), options_(options), session_(resume) {}

void KvClient::Run(const char* name, KvRequest request, bool write, ResponseCallback done) {
  TypedCall<KvTransport, KvRequest, KvResponse>::Start(
      transport_, leader_, options_, name, write ? &session_ : nullptr, write ? StampKv : nullptr,
      std::move(request), std::move(done));
}

}  // namespace ds::client
