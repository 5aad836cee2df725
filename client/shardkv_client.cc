#include "client/shardkv_client.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "shardkv/key_shard.h"

namespace ds::client {

using kv::pb::KvRequest;
using kv::pb::KvResponse;

namespace {

void StampKv(KvRequest& request, const rsm::pb::SessionRef& ref) {
  if (request.has_put()) {
    *request.mutable_put()->mutable_session() = ref;
  } else if (request.has_append()) {
    *request.mutable_append()->mutable_session() = ref;
  } else if (request.has_delete_()) {
    *request.mutable_delete_()->mutable_session() = ref;
  }
}

const std::string& KeyOf(const KvRequest& r) {
  switch (r.op_case()) {
    case KvRequest::kPut:
      return r.put().key();
    case KvRequest::kAppend:
      return r.append().key();
    case KvRequest::kDelete:
      return r.delete_().key();
    default:
      return r.get().key();
  }
}

}  // namespace

// One operation of a ShardedKvClient: sent to its key's group; on "wrong
// group", or when the group cannot be reached, the configuration is read
// again and the same command (same session reference) goes to the group that
// owns the shard now.
class ShardedKvCall final : public RetryingCall {
 public:
  using DoneFn = ShardedKvClient::ResponseCallback;

  ShardedKvCall(ShardedKvClient* client, const char* name, bool write, KvRequest request,
                DoneFn done)
      : RetryingCall(client->timer_, std::make_shared<LeaderCache>(std::vector<std::string>()),
                     client->options_, name, write ? &client->session_ : nullptr),
        client_(client),
        write_(write),
        request_(std::move(request)),
        done_(std::move(done)),
        pause_(client->options_.initial_backoff) {}

  void Begin() {
    Start(/*taken_over=*/true);
    Route(/*refresh=*/false);
  }

 private:
  // Sends the command to the group the cached configuration names (after
  // reading it again if `refresh`), pausing first if that is the group that
  // just refused it.
  void Route(bool refresh) {
    auto self = std::static_pointer_cast<ShardedKvCall>(shared_from_this());
    if (refresh) {
      refreshed_ = true;
      client_->Refresh([self](absl::Status) { self->Route(false); });
      return;
    }
    absl::StatusOr<Location> where = client_->Where(KeyOf(request_));
    if (absl::Now() >= deadline()) {
      Reply r;
      r.status = absl::DeadlineExceededError(absl::StrCat(
          KeyOf(request_).empty() ? "request" : "key", ": no group served it within ",
          absl::FormatDuration(client_->options_.operation_timeout),
          "; last error: ", where.ok() ? last_error_ : std::string(where.status().message())));
      return Abandon(std::move(r));
    }
    if (!where.ok() && !refreshed_) {
      // Nothing cached yet (the client's first operation): read it now.
      return Route(/*refresh=*/true);
    }
    if (!where.ok()) {
      // No group has joined, or the shard is unassigned: read it again soon.
      last_error_ = std::string(where.status().message());
      client_->timer_->RunAt(absl::Now() + NextPause(), [self] { self->Route(true); });
      return;
    }
    const bool same = where->servers == servers_;
    servers_ = where->servers;
    ShardedKvClient::Group g = client_->GroupFor(servers_);
    Retarget(g.transport, g.leader);
    transport_ = g.transport;
    Resume(same ? NextPause() : absl::ZeroDuration());
  }

  absl::Duration NextPause() {
    const absl::Duration p = pause_;
    pause_ = std::min(pause_ * 2, client_->options_.max_backoff);
    return p;
  }

  bool Reroute(const Reply& reply, bool round_failed) override {
    if (!round_failed && reply.status.code() != absl::StatusCode::kFailedPrecondition) {
      return false;
    }
    last_error_ = std::string(reply.status.message());
    Route(/*refresh=*/true);
    return true;
  }

  void Send(size_t replica, absl::Time deadline) override {
    if (write_) StampKv(request_, ref());
    auto self = std::static_pointer_cast<ShardedKvCall>(shared_from_this());
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

  ShardedKvClient* const client_;
  const bool write_;
  KvRequest request_;
  KvResponse response_;
  const DoneFn done_;
  KvTransport* transport_ = nullptr;  // the current group's
  std::vector<std::string> servers_;
  absl::Duration pause_;
  bool refreshed_ = false;  // this call has read the configuration itself
  std::string last_error_ = "no attempt made";
};

ShardedKvClient::ShardedKvClient(CtrlClient* ctrl, ReplicaTransport* timer, GroupTransportFn groups,
                                 RetryOptions options, SessionState resume)
    : ctrl_(ctrl),
      timer_(timer),
      make_group_(std::move(groups)),
      options_(options),
      session_(resume) {}

void ShardedKvClient::Refresh(std::function<void(absl::Status)> then) {
  ctrl_->Query(-1, [this, then = std::move(then)](absl::StatusOr<ctrl::pb::Config> c) {
    if (c.ok()) {
      absl::MutexLock lock(&mu_);
      if (c->num() > config_.num()) config_ = std::move(*c);
    }
    then(c.status());
  });
}

absl::StatusOr<Location> ShardedKvClient::Where(std::string_view key) const {
  absl::MutexLock lock(&mu_);
  if (config_.num() == 0 || config_.shards_size() == 0) {
    return absl::NotFoundError("no configuration yet (no group has joined)");
  }
  Location where;
  where.shard = shardkv::KeyToShard(key, static_cast<uint32_t>(config_.shards_size()));
  where.gid = config_.shards(static_cast<int>(where.shard));
  where.config_num = config_.num();
  for (const ctrl::pb::Group& g : config_.groups()) {
    if (g.gid() == where.gid) where.servers.assign(g.servers().begin(), g.servers().end());
  }
  if (where.gid == 0 || where.servers.empty()) {
    return absl::NotFoundError(
        absl::StrCat("shard ", where.shard, " has no group in configuration ", config_.num()));
  }
  return where;
}

ShardedKvClient::Group ShardedKvClient::GroupFor(const std::vector<std::string>& servers) {
  absl::MutexLock lock(&mu_);
  auto it = groups_.find(servers);
  if (it == groups_.end()) {
    KvTransport* t = make_group_(servers);
    it = groups_.emplace(servers, Group{t, std::make_shared<LeaderCache>(t->endpoints())}).first;
  }
  return it->second;
}

void ShardedKvClient::Run(const char* name, KvRequest request, bool write, ResponseCallback done) {
  std::make_shared<ShardedKvCall>(this, name, write, std::move(request), std::move(done))->Begin();
}

void ShardedKvClient::Get(std::string key, std::function<void(absl::StatusOr<GetResult>)> done) {
  KvRequest req;
  req.mutable_get()->set_key(std::move(key));
  Run("get", std::move(req), false, [done = std::move(done)](absl::StatusOr<KvResponse> r) {
    if (!r.ok()) return done(r.status());
    done(GetResult{r->get().found(), std::move(*r->mutable_get()->mutable_value())});
  });
}

void ShardedKvClient::Put(std::string key, std::string value,
                          std::function<void(absl::Status)> done) {
  KvRequest req;
  req.mutable_put()->set_key(std::move(key));
  req.mutable_put()->set_value(std::move(value));
  Run("put", std::move(req), true,
      [done = std::move(done)](absl::StatusOr<KvResponse> r) { done(r.status()); });
}

void ShardedKvClient::Append(std::string key, std::string value,
                             std::function<void(absl::Status)> done) {
  KvRequest req;
  req.mutable_append()->set_key(std::move(key));
  req.mutable_append()->set_value(std::move(value));
  Run("append", std::move(req), true,
      [done = std::move(done)](absl::StatusOr<KvResponse> r) { done(r.status()); });
}

void ShardedKvClient::Delete(std::string key, std::function<void(absl::StatusOr<bool>)> done) {
  KvRequest req;
  req.mutable_delete_()->set_key(std::move(key));
  Run("del", std::move(req), true, [done = std::move(done)](absl::StatusOr<KvResponse> r) {
    if (!r.ok()) return done(r.status());
    done(r->delete_().found());
  });
}

void ShardedKvClient::Locate(std::string key, std::function<void(absl::StatusOr<Location>)> done) {
  Refresh([this, key = std::move(key), done = std::move(done)](absl::Status st) {
    if (!st.ok()) return done(st);
    absl::StatusOr<Location> where = Where(key);
    if (!where.ok() && where.status().code() == absl::StatusCode::kNotFound) {
      // Unassigned is an answer, not an error.
      absl::MutexLock lock(&mu_);
      Location l;
      l.shard = shardkv::KeyToShard(key, static_cast<uint32_t>(config_.shards_size()));
      l.config_num = config_.num();
      if (config_.shards_size() > 0) l.gid = config_.shards(static_cast<int>(l.shard));
      return done(l);
    }
    done(std::move(where));
  });
}

// ---- ShardKvClerk ----

absl::StatusOr<std::unique_ptr<ShardKvClerk>> ShardKvClerk::Create(ClerkOptions options) {
  if (absl::Status st = ValidateClerkOptions(options); !st.ok()) return st;
  return std::unique_ptr<ShardKvClerk>(new ShardKvClerk(std::move(options)));
}

ShardKvClerk::ShardKvClerk(ClerkOptions options)
    : options_(std::move(options)), ctrl_transport_(std::make_unique<GrpcCtrlTransport>(options_)) {
  const RetryOptions retry = ToRetryOptions(options_);
  ctrl_ = std::make_unique<CtrlClient>(ctrl_transport_.get(),
                                       std::make_shared<LeaderCache>(options_.endpoints), retry);
  client_ = std::make_unique<ShardedKvClient>(
      ctrl_.get(), ctrl_transport_.get(),
      [this](const std::vector<std::string>& servers) -> KvTransport* {
        absl::MutexLock lock(&groups_mu_);
        auto& t = groups_[servers];
        if (t == nullptr) {
          ClerkOptions o = options_;
          o.endpoints = servers;
          o.channels.clear();
          t = std::make_unique<GrpcKvTransport>(o);
        }
        return t.get();
      },
      retry, options_.session);
}

ShardKvClerk::~ShardKvClerk() {
  // Calls still in flight (late leader probes) are cancelled first.
  {
    absl::MutexLock lock(&groups_mu_);
    groups_.clear();
  }
  ctrl_transport_.reset();
}

absl::StatusOr<GetResult> ShardKvClerk::Get(const std::string& key) {
  absl::MutexLock lock(&op_mu_);
  return Await<absl::StatusOr<GetResult>>([&](auto cb) { client_->Get(key, std::move(cb)); });
}

absl::Status ShardKvClerk::Put(const std::string& key, const std::string& value) {
  absl::MutexLock lock(&op_mu_);
  return Await<absl::Status>([&](auto cb) { client_->Put(key, value, std::move(cb)); });
}

absl::Status ShardKvClerk::Append(const std::string& key, const std::string& value) {
  absl::MutexLock lock(&op_mu_);
  return Await<absl::Status>([&](auto cb) { client_->Append(key, value, std::move(cb)); });
}

absl::StatusOr<bool> ShardKvClerk::Delete(const std::string& key) {
  absl::MutexLock lock(&op_mu_);
  return Await<absl::StatusOr<bool>>([&](auto cb) { client_->Delete(key, std::move(cb)); });
}

absl::StatusOr<Location> ShardKvClerk::Locate(const std::string& key) {
  absl::MutexLock lock(&op_mu_);
  return Await<absl::StatusOr<Location>>([&](auto cb) { client_->Locate(key, std::move(cb)); });
}

}  // namespace ds::client
