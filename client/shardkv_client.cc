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
class ShardedKvCall final : public TypedCall<KvTransport, KvRequest, KvResponse> {
 public:
  ShardedKvCall(ShardedKvClient* client, const char* name, bool write, KvRequest request,
                DoneFn done)
      : TypedCall(/*transport=*/nullptr, std::make_shared<LeaderCache>(std::vector<std::string>()),
                  client->options_, name, write ? &client->session_ : nullptr,
                  write ? StampKv : nullptr, std::move(request), std::move(done)),
        client_(client),
        pause_(client->options_.initial_backoff) {}

  void Begin() {
    RetryingCall::Start(/*taken_over=*/true);
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
    absl::StatusOr<Location> where = client_->Where(KeyOf(request()));
    if (!where.ok() && !refreshed_) {
      // Nothing cached yet (the client's first operation): read it now.
      return Route(/*refresh=*/true);
    }
    if (absl::Now() >= deadline()) {
      Reply r;
      r.status = absl::DeadlineExceededError(absl::StrCat(
          KeyOf(request()).empty() ? "request" : "key", ": no group served it within ",
          absl::FormatDuration(client_->options_.operation_timeout),
          "; last error: ", where.ok() ? last_error_ : std::string(where.status().message())));
      return Abandon(std::move(r));
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

  ShardedKvClient* const client_;
  std::vector<std::string> servers_;  // the group the command goes to
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
  OneOperationAtATime::Turn turn(turns_);
  return Await<absl::StatusOr<GetResult>>([&](auto cb) { client_->Get(key, std::move(cb)); });
}

absl::Status ShardKvClerk::Put(const std::string& key, const std::string& value) {
  OneOperationAtATime::Turn turn(turns_);
  return Await<absl::Status>([&](auto cb) { client_->Put(key, value, std::move(cb)); });
}

absl::Status ShardKvClerk::Append(const std::string& key, const std::string& value) {
  OneOperationAtATime::Turn turn(turns_);
  return Await<absl::Status>([&](auto cb) { client_->Append(key, value, std::move(cb)); });
}

absl::StatusOr<bool> ShardKvClerk::Delete(const std::string& key) {
  OneOperationAtATime::Turn turn(turns_);
  return Await<absl::StatusOr<bool>>([&](auto cb) { client_->Delete(key, std::move(cb)); });
}

absl::StatusOr<Location> ShardKvClerk::Locate(const std::string& key) {
  OneOperationAtATime::Turn turn(turns_);
  return Await<absl::StatusOr<Location>>([&](auto cb) { client_->Locate(key, std::move(cb)); });
}

}  // namespace ds::client
