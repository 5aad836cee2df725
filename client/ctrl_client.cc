#include "client/ctrl_client.h"

#include <utility>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace ds::client {

using ctrl::pb::CtrlRequest;
using ctrl::pb::CtrlResponse;

namespace {

// One controller operation, re-sent (stamped with the session's reference,
// for writes) until it succeeds.
class CtrlCall final : public RetryingCall {
 public:
  using DoneFn = std::function<void(absl::StatusOr<CtrlResponse>)>;

  CtrlCall(CtrlTransport* transport, std::shared_ptr<LeaderCache> leader,
           const RetryOptions& options, const char* name, ClientSession* session,
           CtrlRequest request, DoneFn done)
      : RetryingCall(transport, std::move(leader), options, name, session),
        transport_(transport),
        request_(std::move(request)),
        done_(std::move(done)) {}

 private:
  void Send(size_t replica, absl::Time deadline) override {
    if (request_.has_join()) {
      *request_.mutable_join()->mutable_session() = ref();
    } else if (request_.has_leave()) {
      *request_.mutable_leave()->mutable_session() = ref();
    } else if (request_.has_move()) {
      *request_.mutable_move()->mutable_session() = ref();
    }
    auto self = std::static_pointer_cast<CtrlCall>(shared_from_this());
    transport_->Send(replica, request_, deadline, [self](CtrlResponse resp) {
      Reply r = ToReply(resp.status());
      if (r.status.ok()) self->response_ = std::move(resp);
      self->OnReply(std::move(r));
    });
  }

  void Done(Reply reply) override {
    if (!reply.status.ok()) return done_(std::move(reply.status));
    done_(std::move(response_));
  }

  CtrlTransport* const transport_;
  CtrlRequest request_;
  CtrlResponse response_;
  const DoneFn done_;
};

// The configuration number of a Join, Leave or Move response.
uint64_t MadeNum(const CtrlResponse& r) {
  switch (r.result_case()) {
    case CtrlResponse::kJoin:
      return r.join().num();
    case CtrlResponse::kLeave:
      return r.leave().num();
    case CtrlResponse::kMove:
      return r.move().num();
    default:
      return 0;
  }
}

}  // namespace

CtrlClient::CtrlClient(CtrlTransport* transport, std::shared_ptr<LeaderCache> leader,
                       RetryOptions options, SessionState resume)
    : transport_(transport), leader_(std::move(leader)), options_(options), session_(resume) {}

void CtrlClient::Write(const char* name, CtrlRequest request, ResponseFn done) {
  std::make_shared<CtrlCall>(transport_, leader_, options_, name, &session_, std::move(request),
                             std::move(done))
      ->Start();
}

void CtrlClient::Read(const char* name, CtrlRequest request, ResponseFn done) {
  std::make_shared<CtrlCall>(transport_, leader_, options_, name, nullptr, std::move(request),
                             std::move(done))
      ->Start();
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

class CtrlClerk::Transport final : public CtrlTransport {
 public:
  explicit Transport(const ClerkOptions& options) : grpc_(options.endpoints, options.channels) {
    for (size_t i = 0; i < grpc_.endpoints().size(); ++i) {
      stubs_.push_back(ctrl::pb::ShardCtrler::NewStub(grpc_.channel(i)));
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

  void Send(size_t i, CtrlRequest req, absl::Time deadline,
            std::function<void(CtrlResponse)> done) override {
    auto call = std::make_shared<std::pair<CtrlRequest, CtrlResponse>>(std::move(req),
                                                                       CtrlResponse());
    auto* stub = stubs_[i]->async();
    grpc_.Call(
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
            case CtrlRequest::kQuery:
              return stub->Query(ctx, &r.query(), resp.mutable_query(), std::move(finish));
            case CtrlRequest::kLatest:
              return stub->Latest(ctx, &r.latest(), resp.mutable_latest(), std::move(finish));
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
  std::vector<std::unique_ptr<ctrl::pb::ShardCtrler::Stub>> stubs_;
  GrpcReplicas grpc_;  // destroyed first: cancels calls in flight
};

absl::StatusOr<std::unique_ptr<CtrlClerk>> CtrlClerk::Create(ClerkOptions options) {
  if (options.endpoints.empty()) return absl::InvalidArgumentError("no controller endpoints given");
  for (const auto& e : options.endpoints) {
    if (auto p = ParseEndpoints(e); !p.ok()) return p.status();
  }
  if (!options.channels.empty() && options.channels.size() != options.endpoints.size()) {
    return absl::InvalidArgumentError("channels: want one per endpoint");
  }
  if (options.attempt_timeout <= absl::ZeroDuration() ||
      options.operation_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeouts must be positive");
  }
  return std::unique_ptr<CtrlClerk>(new CtrlClerk(std::move(options)));
}

CtrlClerk::CtrlClerk(ClerkOptions options)
    : options_(std::move(options)), transport_(std::make_unique<Transport>(options_)) {
  client_ = std::make_unique<CtrlClient>(transport_.get(),
                                         std::make_shared<LeaderCache>(options_.endpoints),
                                         ToRetryOptions(options_), options_.session);
}

CtrlClerk::~CtrlClerk() { transport_.reset(); }

namespace {

template <typename T, typename Start>
T Wait(Start start) {
  T result;
  absl::Notification done;
  start([&](T r) {
    result = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

}  // namespace

absl::StatusOr<uint64_t> CtrlClerk::Join(GroupServers groups) {
  absl::MutexLock lock(&op_mu_);
  return Wait<absl::StatusOr<uint64_t>>(
      [&](auto cb) { client_->Join(std::move(groups), std::move(cb)); });
}

absl::StatusOr<uint64_t> CtrlClerk::Leave(std::vector<uint64_t> gids) {
  absl::MutexLock lock(&op_mu_);
  return Wait<absl::StatusOr<uint64_t>>(
      [&](auto cb) { client_->Leave(std::move(gids), std::move(cb)); });
}

absl::StatusOr<uint64_t> CtrlClerk::Move(uint32_t shard, uint64_t gid) {
  absl::MutexLock lock(&op_mu_);
  return Wait<absl::StatusOr<uint64_t>>(
      [&](auto cb) { client_->Move(shard, gid, std::move(cb)); });
}

absl::StatusOr<ctrl::pb::Config> CtrlClerk::Query(int64_t num) {
  absl::MutexLock lock(&op_mu_);
  return Wait<absl::StatusOr<ctrl::pb::Config>>(
      [&](auto cb) { client_->Query(num, std::move(cb)); });
}

absl::StatusOr<uint64_t> CtrlClerk::Latest() {
  absl::MutexLock lock(&op_mu_);
  return Wait<absl::StatusOr<uint64_t>>([&](auto cb) { client_->Latest(std::move(cb)); });
}

}  // namespace ds::client
