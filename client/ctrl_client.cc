#include "client/ctrl_client.h"

#include <utility>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace ds::client {

using ctrl::pb::CtrlRequest;
using ctrl::pb::CtrlResponse;

namespace {

// Join, Leave, Move and Servers carry the session's reference.
void StampCtrl(CtrlRequest& request, const rsm::pb::SessionRef& ref) {
  if (request.has_join()) {
    *request.mutable_join()->mutable_session() = ref;
  } else if (request.has_leave()) {
    *request.mutable_leave()->mutable_session() = ref;
  } else if (request.has_move()) {
    *request.mutable_move()->mutable_session() = ref;
  } else if (request.has_servers()) {
    *request.mutable_servers()->mutable_session() = ref;
  }
}

// The configuration number of a Join, Leave, Move or Servers response.
uint64_t MadeNum(const CtrlResponse& r) {
  switch (r.result_case()) {
    case CtrlResponse::kJoin:
      return r.join().num();
    case CtrlResponse::kLeave:
      return r.leave().num();
    case CtrlResponse::kMove:
      return r.move().num();
    case CtrlResponse::kServers:
      return r.servers().num();
    default:
      return 0;
  }
}

}  // namespace

CtrlClient::CtrlClient(CtrlTransport* transport, std::shared_ptr<LeaderCache> leader,
                       RetryOptions options, SessionState resume)
    : transport_(transport), leader_(std::move(leader)), options_(options), session_(resume) {}

void CtrlClient::Write(const char* name, CtrlRequest request, ResponseFn done) {
  TypedCall<CtrlTransport, CtrlRequest, CtrlResponse>::Start(transport_, leader_, options_, name,
                                                             &session_, StampCtrl,
                                                             std::move(request), std::move(done));
}

void CtrlClient::Read(const char* name, CtrlRequest request, ResponseFn done) {
  TypedCall<CtrlTransport, CtrlRequest, CtrlResponse>::Start(
      transport_, leader_, options_, name, nullptr, nullptr, std::move(request), std::move(done));
}

void CtrlClient::Join(GroupServers groups, std::function<void(absl::StatusOr<uint64_t>)> done) {
  CtrlRequest req;
  for (auto& [gid, servers] : groups) {
    ctrl::pb::Group* g = req.mutable_join()->add_groups();
    g->set_gid(gid);
    for (auto& s : servers) g->add_servers(std::move(s));
  }
  if (groups.empty()) req.mutable_join();
  Write("join", std::move(req), [done = std::move(done)](absl::StatusOr<CtrlResponse> r) {
    if (!r.ok()) return done(r.status());
    done(MadeNum(*r));
  });
}

void CtrlClient::Leave(std::vector<uint64_t> gids,
                       std::function<void(absl::StatusOr<uint64_t>)> done) {
  CtrlRequest req;
  req.mutable_leave()->mutable_gids()->Add(gids.begin(), gids.end());
  Write("leave", std::move(req), [done = std::move(done)](absl::StatusOr<CtrlResponse> r) {
    if (!r.ok()) return done(r.status());
    done(MadeNum(*r));
  });
}

void CtrlClient::Move(uint32_t shard, uint64_t gid,
                      std::function<void(absl::StatusOr<uint64_t>)> done) {
  CtrlRequest req;
  req.mutable_move()->set_shard(shard);
  req.mutable_move()->set_gid(gid);
  Write("move", std::move(req), [done = std::move(done)](absl::StatusOr<CtrlResponse> r) {
    if (!r.ok()) return done(r.status());
    done(MadeNum(*r));
  });
}

void CtrlClient::Servers(uint64_t gid, std::vector<std::string> servers,
                         std::function<void(absl::StatusOr<uint64_t>)> done) {
  CtrlRequest req;
  req.mutable_servers()->set_gid(gid);
  for (auto& s : servers) req.mutable_servers()->add_servers(std::move(s));
  Write("servers", std::move(req), [done = std::move(done)](absl::StatusOr<CtrlResponse> r) {
    if (!r.ok()) return done(r.status());
    done(MadeNum(*r));
  });
}

void CtrlClient::Query(int64_t num, std::function<void(absl::StatusOr<ctrl::pb::Config>)> done) {
  CtrlRequest req;
  req.mutable_query()->set_num(num);
  Read("query", std::move(req), [done = std::move(done)](absl::StatusOr<CtrlResponse> r) {
    if (!r.ok()) return done(r.status());
    done(std::move(*r->mutable_query()->mutable_config()));
  });
}

void CtrlClient::Latest(std::function<void(absl::StatusOr<uint64_t>)> done) {
  CtrlRequest req;
  req.mutable_latest();
  Read("latest", std::move(req), [done = std::move(done)](absl::StatusOr<CtrlResponse> r) {
    if (!r.ok()) return done(r.status());
    done(r->latest().num());
  });
}

// ---- CtrlClerk ----

void GrpcCtrlTransport::Send(size_t i, CtrlRequest req, absl::Time deadline,
                             std::function<void(CtrlResponse)> done) {
  auto call =
      std::make_shared<std::pair<CtrlRequest, CtrlResponse>>(std::move(req), CtrlResponse());
  auto* stub = this->stub(i)->async();
  grpc().Call(
      deadline,
      [stub, call](grpc::ClientContext* ctx, std::function<void(grpc::Status)> finish) {
        CtrlRequest& r = call->first;
        CtrlResponse& resp = call->second;
        switch (r.op_case()) {
          case CtrlRequest::kJoin:
            return stub->Join(ctx, &r.join(), resp.mutable_join(), std::move(finish));
          case CtrlRequest::kLeave:
            return stub->Leave(ctx, &r.leave(), resp.mutable_leave(), std::move(finish));
          case CtrlRequest::kMove:
            return stub->Move(ctx, &r.move(), resp.mutable_move(), std::move(finish));
          case CtrlRequest::kServers:
            return stub->Servers(ctx, &r.servers(), resp.mutable_servers(), std::move(finish));
          case CtrlRequest::kQuery:
            return stub->Query(ctx, &r.query(), resp.mutable_query(), std::move(finish));
          case CtrlRequest::kLatest:
            return stub->Latest(ctx, &r.latest(), resp.mutable_latest(), std::move(finish));
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

absl::StatusOr<std::unique_ptr<CtrlClerk>> CtrlClerk::Create(ClerkOptions options) {
  if (absl::Status st = ValidateClerkOptions(options); !st.ok()) return st;
  return std::unique_ptr<CtrlClerk>(new CtrlClerk(std::move(options)));
}

CtrlClerk::CtrlClerk(ClerkOptions options)
    : options_(std::move(options)), transport_(std::make_unique<GrpcCtrlTransport>(options_)) {
  client_ = std::make_unique<CtrlClient>(transport_.get(),
                                         std::make_shared<LeaderCache>(options_.endpoints),
                                         ToRetryOptions(options_), options_.session);
}

CtrlClerk::~CtrlClerk() { transport_.reset(); }

absl::StatusOr<uint64_t> CtrlClerk::Join(GroupServers groups) {
  OneOperationAtATime::Turn turn(turns_);
  return Await<absl::StatusOr<uint64_t>>(
      [&](auto cb) { client_->Join(std::move(groups), std::move(cb)); });
}

absl::StatusOr<uint64_t> CtrlClerk::Leave(std::vector<uint64_t> gids) {
  OneOperationAtATime::Turn turn(turns_);
  return Await<absl::StatusOr<uint64_t>>(
      [&](auto cb) { client_->Leave(std::move(gids), std::move(cb)); });
}

absl::StatusOr<uint64_t> CtrlClerk::Move(uint32_t shard, uint64_t gid) {
  OneOperationAtATime::Turn turn(turns_);
  return Await<absl::StatusOr<uint64_t>>(
      [&](auto cb) { client_->Move(shard, gid, std::move(cb)); });
}

absl::StatusOr<uint64_t> CtrlClerk::Servers(uint64_t gid, std::vector<std::string> servers) {
  OneOperationAtATime::Turn turn(turns_);
  return Await<absl::StatusOr<uint64_t>>(
      [&](auto cb) { client_->Servers(gid, std::move(servers), std::move(cb)); });
}

absl::StatusOr<ctrl::pb::Config> CtrlClerk::Query(int64_t num) {
  OneOperationAtATime::Turn turn(turns_);
  return Await<absl::StatusOr<ctrl::pb::Config>>(
      [&](auto cb) { client_->Query(num, std::move(cb)); });
}

absl::StatusOr<uint64_t> CtrlClerk::Latest() {
  OneOperationAtATime::Turn turn(turns_);
  return Await<absl::StatusOr<uint64_t>>([&](auto cb) { client_->Latest(std::move(cb)); });
}

}  // namespace ds::client
