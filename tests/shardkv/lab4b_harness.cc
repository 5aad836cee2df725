#include "tests/shardkv/lab4b_harness.h"

#include <cstdlib>
#include <functional>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/init.h"
#include "gtest/gtest.h"
#include "kvraft/kv_service.h"
#include "shardctrler/ctrl_service.h"
#include "shardkv/key_shard.h"
#include "shardkv/migration_client.h"
#include "shardkv/shardkv_state_machine.h"
#include "tests/kvraft/recorded_ops.h"

namespace ds::shardkv::lab4b {

using rsm::testing::ReplicaGroup;

namespace {

// The three kinds of in-process calls: to the controller, to a group's
// KvService, and from a group to another (ShardMigration), each running the
// server's own request path on the replica.
using CtrlLink = rsm::testing::LinkTransport<client::CtrlTransport, ctrl::pb::CtrlRequest,
                                             ctrl::pb::CtrlResponse>;
using KvLink =
    rsm::testing::LinkTransport<client::KvTransport, kv::pb::KvRequest, kv::pb::KvResponse>;
using MigrationLink =
    rsm::testing::LinkTransport<MigrationTransport, pb::MigrationRequest, pb::MigrationResponse>;

std::unique_ptr<CtrlLink> MakeCtrlLink(ctrl::lab4a::Cluster* ctrl, uint64_t seed) {
  return std::make_unique<CtrlLink>(
      ctrl, ctrl->All(), seed,
      [service = ctrl->service()](const rsm::ReplicaContext& replica, ctrl::pb::CtrlRequest request,
                                  absl::Time deadline,
                                  std::function<void(ctrl::pb::CtrlResponse)> done) {
        ctrl::HandleCtrlRequest(replica, service, std::move(request), deadline, std::move(done));
      });
}

// shardkv-server's KvService options: kvraft's request path over shardkv's
// backend.
const kv::KvServiceOptions& KvOptions() {
  static const ShardKvBackend* const backend = new ShardKvBackend();
  static const kv::KvServiceOptions* const options = new kv::KvServiceOptions{.backend = backend};
  return *options;
}

std::unique_ptr<KvLink> MakeKvLink(ReplicaGroup* group, uint64_t seed) {
  return std::make_unique<KvLink>(
      group, group->All(), seed,
      [](const rsm::ReplicaContext& replica, kv::pb::KvRequest request, absl::Time deadline,
         std::function<void(kv::pb::KvResponse)> done) {
        kv::HandleKvRequest(replica, KvOptions(), std::move(request), deadline, std::move(done));
      });
}

std::unique_ptr<MigrationLink> MakeMigrationLink(ReplicaGroup* group, uint64_t seed) {
  return std::make_unique<MigrationLink>(
      group, group->All(), seed,
      [](const rsm::ReplicaContext& replica, pb::MigrationRequest request, absl::Time deadline,
         std::function<void(pb::MigrationResponse)> done) {
        HandleMigrationRequest(replica, std::move(request), deadline, std::move(done));
      });
}

std::shared_ptr<spdlog::logger> DriverLogger(uint64_t gid, int i) {
  // Quiet by default, like the replicas (tests/rsm/replica_group.cc);
  // DSTACK_TEST_LOG=info shows every configuration and installed shard.
  spdlog::level::level_enum level = spdlog::level::warn;
  if (const char* env = std::getenv("DSTACK_TEST_LOG")) common::ParseLogLevel(env, &level);
  auto logger = common::MakeLogger(absl::StrCat("g", gid, "-", ReplicaGroup::Id(i), "-driver"));
  logger->set_level(level);
  return logger;
}

const ShardKvStateMachine& StateMachineOf(const rsm::testing::Replica& r) {
  return static_cast<const ShardKvStateMachine&>(*r.app);
}

// A configuration that names servers no group has: every call fails (the
// clerk keeps re-reading the configuration). Never expected; reported.
class NoSuchGroup final : public client::KvTransport {
 public:
  NoSuchGroup(client::ReplicaTransport* timer, std::vector<std::string> servers)
      : timer_(timer), servers_(std::move(servers)) {}
  const std::vector<std::string>& endpoints() const override { return servers_; }
  void Probe(size_t, absl::Time,
             std::function<void(absl::StatusOr<rsm::pb::StatusResponse>)> done) override {
    RunAt(absl::Now() + absl::Milliseconds(5),
          [done = std::move(done)] { done(absl::UnavailableError("no such server")); });
  }
  void RunAt(absl::Time when, std::function<void()> fn) override {
    timer_->RunAt(when, std::move(fn));
  }
  void Send(size_t, kv::pb::KvRequest, absl::Time,
            std::function<void(kv::pb::KvResponse)> done) override {
    RunAt(absl::Now() + absl::Milliseconds(5), [done = std::move(done)] {
      kv::pb::KvResponse resp;
      resp.mutable_status()->set_code(static_cast<int>(absl::StatusCode::kUnavailable));
      resp.mutable_status()->set_message("no such server");
      done(std::move(resp));
    });
  }

 private:
  client::ReplicaTransport* const timer_;
  const std::vector<std::string> servers_;
};

}  // namespace

// ---------------------------------------------------------------------------
// The drivers' view of the world
// ---------------------------------------------------------------------------

// The controller, through a CtrlClient of the driver's own (blocking calls).
class Cluster::ControllerSource final : public ConfigSource {
 public:
  ControllerSource(Cluster* cluster, uint64_t seed)
      : link_(MakeCtrlLink(cluster->ctrl_.get(), seed)),
        client_(link_.get(), std::make_shared<client::LeaderCache>(link_->endpoints()),
                cluster->options_.driver_calls) {}

  absl::StatusOr<uint64_t> Latest() override {
    return client::Await<absl::StatusOr<uint64_t>>([&](auto cb) { client_.Latest(std::move(cb)); });
  }
  absl::StatusOr<ctrl::pb::Config> Query(uint64_t num) override {
    return client::Await<absl::StatusOr<ctrl::pb::Config>>(
        [&](auto cb) { client_.Query(static_cast<int64_t>(num), std::move(cb)); });
  }
  absl::StatusOr<uint64_t> Servers(uint64_t gid, std::vector<std::string> servers) override {
    return client::Await<absl::StatusOr<uint64_t>>(
        [&](auto cb) { client_.Servers(gid, std::move(servers), std::move(cb)); });
  }

 private:
  const std::unique_ptr<CtrlLink> link_;
  client::CtrlClient client_;
};

// The other groups by the server names of a configuration: one
// MigrationClient (leader cache, retries) per group, over links of the
// driver's own.
class Cluster::PeerGroupsImpl final : public PeerGroups {
 public:
  PeerGroupsImpl(Cluster* cluster, uint64_t seed) : cluster_(cluster), seed_(seed) {}

  absl::StatusOr<pb::PullShardResponse> Pull(const std::vector<std::string>& servers,
                                             const pb::PullShardRequest& request) override {
    absl::StatusOr<MigrationClient*> c = For(servers);
    if (!c.ok()) return c.status();
    return (*c)->Pull(request);
  }
  absl::Status Delete(const std::vector<std::string>& servers,
                      const pb::DeleteShardRequest& request) override {
    absl::StatusOr<MigrationClient*> c = For(servers);
    if (!c.ok()) return c.status();
    return (*c)->Delete(request);
  }

 private:
  struct Peer {
    std::unique_ptr<MigrationLink> link;
    std::unique_ptr<MigrationClient> client;  // over link
  };

  absl::StatusOr<MigrationClient*> For(const std::vector<std::string>& servers) {
    absl::MutexLock lock(&mu_);
    auto it = peers_.find(servers);
    if (it == peers_.end()) {
      ReplicaGroup* group = cluster_->Resolve(servers);
      if (group == nullptr) {
        ADD_FAILURE() << "a configuration names unknown servers " << absl::StrJoin(servers, ",");
        return absl::NotFoundError(absl::StrCat("no group ", absl::StrJoin(servers, ",")));
      }
      Peer p;
      p.link = MakeMigrationLink(group, seed_ + peers_.size());
      p.client = std::make_unique<MigrationClient>(p.link.get(), cluster_->options_.driver_calls);
      it = peers_.emplace(servers, std::move(p)).first;
    }
    return it->second.client.get();
  }

  Cluster* const cluster_;
  const uint64_t seed_;
  absl::Mutex mu_;
  std::map<std::vector<std::string>, Peer> peers_ ABSL_GUARDED_BY(mu_);
};

// The production driver beside one replica incarnation.
class Cluster::Driver final : public rsm::testing::ReplicaCompanion {
 public:
  Driver(Cluster* cluster, uint64_t gid, int i, const rsm::testing::Replica& replica)
      : source_(cluster, cluster->NextSeed()),
        peers_(cluster, cluster->NextSeed()),
        driver_(cluster->options_.driver, replica.rsm.get(), &StateMachineOf(replica), &source_,
                &peers_, DriverLogger(gid, i)) {
    driver_.Start();
  }
  ~Driver() override { Stop(); }

  void Stop() override {
    absl::MutexLock lock(&mu_);
    driver_.Stop();
  }

 private:
  ControllerSource source_;
  PeerGroupsImpl peers_;
  absl::Mutex mu_;  // one Stop at a time
  ShardKvDriver driver_;
};

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

Cluster::Cluster(ClusterOptions options) : options_(std::move(options)) {
  std::printf("seed %llu (DSTACK_TEST_SEED; threads make runs differ anyway)\n",
              static_cast<unsigned long long>(options_.seed));
  ctrl_ = std::make_unique<ctrl::lab4a::Cluster>(rsm::testing::ReplicaGroupOptions{
      .servers = 3, .unreliable = options_.unreliable, .seed = options_.seed, .name = "ctrl"});
  admin_ = ctrl_->MakeClerk();
  {
    absl::MutexLock lock(&mu_);
    groups_.resize(options_.groups);
  }
  for (int gi = 0; gi < options_.groups; ++gi) {
    const uint64_t gid = Gid(gi);
    rsm::testing::ReplicaGroupOptions go;
    go.servers = options_.servers;
    go.unreliable = options_.unreliable;
    go.maxraftstate = options_.maxraftstate;
    go.seed = options_.seed + 7919 * gid;
    go.name = absl::StrCat("g", gid);
    go.endpoint_prefix = absl::StrCat("g", gid, "-");
    auto group = std::make_unique<ReplicaGroup>(
        std::move(go), [gid] { return std::make_unique<ShardKvStateMachine>(gid); },
        [this, gid](int i, const rsm::testing::Replica& r) {
          return std::make_unique<Driver>(this, gid, i, r);
        });
    absl::MutexLock lock(&mu_);
    groups_[gi] = std::move(group);
  }
}

Cluster::~Cluster() {
  // A driver may be in a call to another group: all stop before any group
  // goes away.
  for (int gi = 0; gi < groups(); ++gi) {
    for (int i = 0; i < n(); ++i) group(gi).StopCompanion(i);
  }
  std::vector<std::unique_ptr<ReplicaGroup>> groups;
  {
    absl::MutexLock lock(&mu_);
    groups.swap(groups_);
  }
  groups.clear();
  admin_.reset();
  ctrl_.reset();
}

bool Cluster::JoinM(const std::vector<int>& gis) {
  client::GroupServers join;
  for (int gi : gis) join[Gid(gi)] = group(gi).endpoints();
  absl::StatusOr<uint64_t> num = admin_->Join(std::move(join));
  EXPECT_TRUE(num.ok()) << "join: " << num.status();
  return num.ok();
}

bool Cluster::LeaveM(const std::vector<int>& gis) {
  std::vector<uint64_t> gids;
  for (int gi : gis) gids.push_back(Gid(gi));
  absl::StatusOr<uint64_t> num = admin_->Leave(std::move(gids));
  EXPECT_TRUE(num.ok()) << "leave: " << num.status();
  return num.ok();
}

ctrl::pb::Config Cluster::Query(int64_t num) {
  absl::StatusOr<ctrl::pb::Config> c = admin_->Query(num);
  EXPECT_TRUE(c.ok()) << "query: " << c.status();
  return c.ok() ? *std::move(c) : ctrl::pb::Config();
}

void Cluster::ShutdownServer(int gi, int i) { group(gi).ShutdownServer(i); }

void Cluster::StartServer(int gi, int i) { group(gi).StartServer(i); }

void Cluster::ShutdownGroup(int gi) {
  // The drivers first, while the group can still commit what they wait for
  // (a leader's driver may be waiting for a proposal to apply).
  for (int i = 0; i < n(); ++i) group(gi).StopCompanion(i);
  for (int i = 0; i < n(); ++i) group(gi).ShutdownServer(i);
}

void Cluster::StartGroup(int gi) {
  for (int i = 0; i < n(); ++i) group(gi).StartServer(i);
}

void Cluster::SetReliable(bool reliable) {
  ctrl_->net().SetReliable(reliable);
  for (int gi = 0; gi < groups(); ++gi) group(gi).net().SetReliable(reliable);
}

void Cluster::CheckLogs() {
  for (int gi = 0; gi < groups(); ++gi) {
    for (int i = 0; i < n(); ++i) {
      const uint64_t raft = group(gi).RaftStateBytes(i);
      const uint64_t snap = group(gi).SnapshotBytes(i);
      if (options_.maxraftstate >= 0) {
        EXPECT_LE(raft, 8 * static_cast<uint64_t>(options_.maxraftstate))
            << "group " << Gid(gi) << " replica " << i << ": persisted Raft state " << raft
            << ", but maxraftstate " << options_.maxraftstate;
      } else {
        EXPECT_EQ(snap, 0u) << "group " << Gid(gi) << " replica " << i
                            << ": maxraftstate is -1, but the snapshot is non-empty";
      }
    }
  }
}

uint64_t Cluster::StorageBytes() const {
  absl::MutexLock lock(&mu_);
  uint64_t total = 0;
  for (const auto& g : groups_) {
    for (int i = 0; i < g->n(); ++i) total += g->RaftStateBytes(i) + g->SnapshotBytes(i);
  }
  return total;
}

bool Cluster::WaitSettled(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    const uint64_t latest = Query().num();
    bool settled = latest > 0;
    for (int gi = 0; gi < groups() && settled; ++gi) {
      for (int i = 0; i < n() && settled; ++i) {
        std::shared_ptr<rsm::testing::Replica> r = group(gi).Get(i);
        if (r == nullptr) continue;
        const ShardKvStateMachine::View v = StateMachineOf(*r).view();
        settled = v.current.num() == latest && v.settled();
      }
    }
    if (settled) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

ReplicaGroup* Cluster::Resolve(const std::vector<std::string>& servers) const {
  absl::MutexLock lock(&mu_);
  for (const auto& g : groups_) {
    if (g != nullptr && g->endpoints() == servers) return g.get();
  }
  return nullptr;
}

std::unique_ptr<Clerk> Cluster::MakeClerk(absl::Duration give_up_after) {
  return std::make_unique<Clerk>(this, next_clerk_label_.fetch_add(1), NextSeed(), give_up_after);
}

// ---------------------------------------------------------------------------
// Clerk
// ---------------------------------------------------------------------------

// A clerk's links: to the controller, and to each group a configuration
// names (made on first use, kept for the clerk's life as ShardedKvClient
// requires).
class Clerk::Groups {
 public:
  Groups(Cluster* cluster, uint64_t seed, const client::RetryOptions& retry)
      : cluster_(cluster),
        seed_(seed),
        ctrl_link_(MakeCtrlLink(&cluster->controller(), seed)),
        ctrl_(ctrl_link_.get(), std::make_shared<client::LeaderCache>(ctrl_link_->endpoints()),
              retry) {}

  client::CtrlClient* ctrl() { return &ctrl_; }
  client::ReplicaTransport* timer() { return ctrl_link_.get(); }

  client::KvTransport* For(const std::vector<std::string>& servers) {
    absl::MutexLock lock(&mu_);
    std::unique_ptr<client::KvTransport>& t = links_[servers];
    if (t == nullptr) {
      if (ReplicaGroup* g = cluster_->Resolve(servers); g != nullptr) {
        t = MakeKvLink(g, seed_ + 1 + links_.size());
      } else {
        ADD_FAILURE() << "a configuration names unknown servers " << absl::StrJoin(servers, ",");
        t = std::make_unique<NoSuchGroup>(ctrl_link_.get(), servers);
      }
    }
    return t.get();
  }

 private:
  Cluster* const cluster_;
  const uint64_t seed_;
  const std::unique_ptr<CtrlLink> ctrl_link_;
  client::CtrlClient ctrl_;  // over ctrl_link_
  absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<client::KvTransport>> links_
      ABSL_GUARDED_BY(mu_);
};

Clerk::Clerk(Cluster* cluster, int64_t label, uint64_t seed, absl::Duration give_up_after)
    : cluster_(cluster), label_(label) {
  client::RetryOptions retry;
  retry.operation_timeout = give_up_after;
  retry.attempt_timeout = kAttemptTimeout;
  // Short pauses, as the lab 3 clerks: a new leader is found within a few
  // election timeouts (100-200 ms here).
  retry.initial_backoff = absl::Milliseconds(5);
  retry.max_backoff = absl::Milliseconds(50);
  groups_ = std::make_unique<Groups>(cluster, seed, retry);
  Groups* groups = groups_.get();
  client_ = std::make_unique<client::ShardedKvClient>(
      groups->ctrl(), groups->timer(),
      [groups](const std::vector<std::string>& servers) { return groups->For(servers); }, retry);
}

Clerk::~Clerk() = default;

absl::Status Clerk::Put(const std::string& key, const std::string& value) {
  return kv::RecordedWrite(cluster_->history(), label_, *client_, lincheck::OpKind::kPut, key,
                           value);
}

absl::Status Clerk::Append(const std::string& key, const std::string& value) {
  return kv::RecordedWrite(cluster_->history(), label_, *client_, lincheck::OpKind::kAppend, key,
                           value);
}

absl::StatusOr<std::string> Clerk::Get(const std::string& key) {
  return kv::RecordedGet(cluster_->history(), label_, *client_, key);
}

std::string RandString(raft::Rng& rng, int n) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string s;
  s.reserve(n);
  for (int i = 0; i < n; ++i) s.push_back(kAlphabet[rng.Uniform(64)]);
  return s;
}

std::vector<std::string> Keys(int n) {
  std::vector<std::string> keys;
  for (int i = 0; i < n; ++i) keys.push_back(absl::StrCat(i));
  return keys;
}

bool Check(Clerk& ck, const std::string& key, const std::string& value) {
  absl::StatusOr<std::string> v = ck.Get(key);
  EXPECT_TRUE(v.ok()) << "Get(" << key << "): " << v.status();
  if (!v.ok()) return false;
  EXPECT_EQ(*v, value) << "Get(" << key << ")";
  return *v == value;
}

void CheckAll(Clerk& ck, const std::vector<std::string>& keys,
              const std::vector<std::string>& values) {
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!Check(ck, keys[i], values[i])) return;
  }
}

std::vector<std::string> PutAll(Clerk& ck, const std::vector<std::string>& keys, raft::Rng& rng,
                                int chars) {
  std::vector<std::string> values;
  for (const std::string& k : keys) {
    values.push_back(RandString(rng, chars));
    EXPECT_TRUE(ck.Put(k, values.back()).ok()) << "Put(" << k << ")";
  }
  return values;
}

uint32_t ShardOf(const ctrl::pb::Config& config, const std::string& key) {
  return KeyToShard(key, static_cast<uint32_t>(config.shards_size()));
}

uint64_t OwnerOf(const ctrl::pb::Config& config, const std::string& key) {
  if (config.shards_size() == 0) return 0;
  return config.shards(static_cast<int>(ShardOf(config, key)));
}

Appenders::Appenders(Cluster* cluster, const std::vector<std::string>& keys,
                     std::vector<std::string>* values, int chars, absl::Duration pause,
                     uint64_t seed) {
  for (size_t i = 0; i < keys.size(); ++i) {
    // Each thread owns (*values)[i] until Stop() joins it.
    threads_.emplace_back(
        [this, cluster, key = keys[i], value = &(*values)[i], chars, pause, seed = seed + i] {
          std::unique_ptr<Clerk> ck = cluster->MakeClerk();
          raft::Rng rng(seed);
          while (!done_.load()) {
            const std::string x = RandString(rng, chars);
            if (absl::Status st = ck->Append(key, x); !st.ok()) {
              ADD_FAILURE() << "Append(" << key << "): " << st;
              return;
            }
            *value += x;
            appends_.fetch_add(1);
            if (pause > absl::ZeroDuration()) absl::SleepFor(pause);
          }
        });
  }
}

Appenders::~Appenders() { Stop(); }

void Appenders::Stop() {
  done_ = true;
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

}  // namespace ds::shardkv::lab4b
