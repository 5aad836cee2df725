#include "tests/rsm/replica_group.h"

#include <cstdlib>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/init.h"
#include "gtest/gtest.h"
#include "spdlog/spdlog.h"

namespace ds::rsm::testing {

namespace {

// A replica's Node owns its Storage; this lets the "disk" (the MemoryStorage)
// outlive the incarnation that wrote it.
class DiskView : public raft::Storage {
 public:
  explicit DiskView(std::shared_ptr<raft::MemoryStorage> disk) : disk_(std::move(disk)) {}
  absl::StatusOr<raft::InitialState> GetInitialState() override { return disk_->GetInitialState(); }
  absl::StatusOr<std::vector<raft::pb::Entry>> Entries(uint64_t lo, uint64_t hi,
                                                       uint64_t max_bytes) override {
    return disk_->Entries(lo, hi, max_bytes);
  }
  absl::StatusOr<uint64_t> Term(uint64_t i) override { return disk_->Term(i); }
  uint64_t FirstIndex() override { return disk_->FirstIndex(); }
  uint64_t LastIndex() override { return disk_->LastIndex(); }
  uint64_t SnapshotIndex() override { return disk_->SnapshotIndex(); }
  absl::StatusOr<raft::pb::Snapshot> GetSnapshot() override { return disk_->GetSnapshot(); }
  absl::Status Save(const raft::pb::HardState* hard_state,
                    const std::vector<raft::pb::Entry>& entries, bool sync) override {
    return disk_->Save(hard_state, entries, sync);
  }
  absl::Status ApplySnapshot(const raft::pb::Snapshot& snapshot) override {
    return disk_->ApplySnapshot(snapshot);
  }
  using raft::Storage::CreateSnapshot;
  absl::Status CreateSnapshot(uint64_t index, const raft::pb::ConfState& conf_state,
                              std::string data, const raft::LogRetention& keep) override {
    return disk_->CreateSnapshot(index, conf_state, std::move(data), keep);
  }
  uint64_t RaftStateBytes() override { return disk_->RaftStateBytes(); }
  uint64_t SnapshotBytes() override { return disk_->SnapshotBytes(); }

 private:
  const std::shared_ptr<raft::MemoryStorage> disk_;
};

spdlog::level::level_enum LogLevel() {
  // Quiet by default (role changes of 7 replicas x dozens of elections);
  // DSTACK_TEST_LOG=info shows them when debugging a failure.
  spdlog::level::level_enum level = spdlog::level::warn;
  if (const char* env = std::getenv("DSTACK_TEST_LOG")) common::ParseLogLevel(env, &level);
  return level;
}

}  // namespace

ReplicaGroup::ReplicaGroup(ReplicaGroupOptions options, AppFactory make_app)
    : ReplicaGroup(std::move(options), std::move(make_app), nullptr) {}

ReplicaGroup::ReplicaGroup(ReplicaGroupOptions options, AppFactory make_app,
                           CompanionFactory make_companion)
    : options_(std::move(options)),
      make_app_(std::move(make_app)),
      make_companion_(std::move(make_companion)),
      net_(options_.seed) {
  net_.SetReliable(!options_.unreliable);
  net_.SetDuplicatePerMille(options_.duplicate_per_mille);
  for (int i = 0; i < n(); ++i) {
    storage_.push_back(std::make_shared<raft::MemoryStorage>());
    endpoints_.push_back(absl::StrCat(options_.endpoint_prefix, "r", Id(i)));
  }
  {
    absl::MutexLock lock(&mu_);
    replicas_.resize(n());
  }
  for (int i = 0; i < n(); ++i) StartServer(i);
}

ReplicaGroup::~ReplicaGroup() {
  for (int i = 0; i < n(); ++i) ShutdownServer(i);
}

std::vector<int> ReplicaGroup::All() const {
  std::vector<int> all;
  for (int i = 0; i < n(); ++i) all.push_back(i);
  return all;
}

void ReplicaGroup::StartServer(int i) {
  {
    absl::MutexLock lock(&mu_);
    if (replicas_[i] != nullptr) return;
  }
  auto r = std::make_shared<Replica>();
  r->app = make_app_();
  r->sm = std::make_unique<SessionStateMachine>(r->app.get(), options_.sessions);
  raft::RsmOptions rsm_options;
  rsm_options.snapshot_threshold_bytes =
      options_.maxraftstate > 0 ? static_cast<uint64_t>(options_.maxraftstate) : 0;
  raft::NodeOptions node_options;
  node_options.id = Id(i);
  node_options.tick_interval = options_.tick_interval;
  node_options.raft.election_ticks = options_.election_ticks;
  node_options.raft.heartbeat_ticks = options_.heartbeat_ticks;
  node_options.raft.seed = options_.seed * 31 + Id(i);
  for (int j = 0; j < n(); ++j) node_options.raft.peers.push_back(Id(j));
  node_options.logger = common::MakeLogger(absl::StrCat(options_.name, "-", Id(i)));
  node_options.logger->set_level(LogLevel());
  auto rsm = raft::Rsm::Start(rsm_options, std::move(node_options),
                              std::make_unique<DiskView>(storage_[i]), net_.NewTransport(Id(i)),
                              r->sm.get());
  if (!rsm.ok()) {
    ADD_FAILURE() << "starting replica " << Id(i) << ": " << rsm.status();
    return;
  }
  r->rsm = std::move(*rsm);
  ServiceOptions service;
  service.request_timeout = options_.request_timeout;
  service.name = options_.name;
  for (int j = 0; j < n(); ++j) service.addresses[Id(j)] = endpoints_[j];
  r->context = std::make_unique<ReplicaContext>(std::move(service), r->rsm.get(), r->sm.get());
  if (make_companion_) r->companion = make_companion_(i, *r);
  absl::MutexLock lock(&mu_);
  replicas_[i] = std::move(r);
}

void ReplicaGroup::ShutdownServer(int i) {
  std::shared_ptr<Replica> r;
  {
    absl::MutexLock lock(&mu_);
    r.swap(replicas_[i]);
  }
  if (r == nullptr) return;
  // The companion acts on the Rsm: it stops first.
  if (r->companion != nullptr) r->companion->Stop();
  // Stop joins the Raft and apply threads: nothing writes to the disk after
  // this, even if a client's call still holds `r`.
  r->rsm->Stop();
  storage_[i]->SimulateCrash();
}

void ReplicaGroup::StopCompanion(int i) {
  std::shared_ptr<Replica> r = Get(i);
  if (r != nullptr && r->companion != nullptr) r->companion->Stop();
}

std::shared_ptr<Replica> ReplicaGroup::Get(int i) const {
  absl::MutexLock lock(&mu_);
  return replicas_[i];
}

void ReplicaGroup::Partition(const std::vector<int>& p1, const std::vector<int>& p2) {
  std::vector<std::vector<uint64_t>> groups(2);
  for (int i : p1) groups[0].push_back(Id(i));
  for (int i : p2) groups[1].push_back(Id(i));
  net_.Partition(groups);
}

int ReplicaGroup::Leader() const {
  int leader = -1;
  uint64_t term = 0;
  for (int i = 0; i < n(); ++i) {
    std::shared_ptr<Replica> r = Get(i);
    if (r == nullptr) continue;
    raft::NodeStatus st = r->rsm->status();
    if (st.role == raft::Role::kLeader && st.term >= term) {
      leader = i;
      term = st.term;
    }
  }
  return leader;
}

std::pair<std::vector<int>, std::vector<int>> ReplicaGroup::MakePartition() const {
  const int leader = Leader();
  std::vector<int> p1;
  std::vector<int> p2;
  for (int i = 0; i < n(); ++i) {
    if (i != leader && static_cast<int>(p1.size()) < n() / 2 + 1) {
      p1.push_back(i);
    } else {
      p2.push_back(i);
    }
  }
  return {p1, p2};
}

uint64_t ReplicaGroup::LogSize() const {
  uint64_t max = 0;
  for (const auto& disk : storage_) max = std::max(max, disk->RaftStateBytes());
  return max;
}

uint64_t ReplicaGroup::SnapshotSize() const {
  uint64_t max = 0;
  for (const auto& disk : storage_) max = std::max(max, disk->SnapshotBytes());
  return max;
}

// ---- ClientLink ----

ClientLink::ClientLink(ReplicaGroup* group, std::vector<int> servers, uint64_t seed)
    : group_(group), state_(std::make_shared<State>(group, seed)) {
  ConnectTo(std::move(servers));
}

void ClientLink::ConnectTo(std::vector<int> servers) {
  absl::MutexLock lock(&state_->mu);
  state_->reachable.assign(group_->n(), false);
  for (int i : servers) state_->reachable[i] = true;
}

bool ClientLink::State::Reachable(size_t i) {
  absl::MutexLock lock(&mu);
  return reachable[i];
}

absl::Duration ClientLink::State::UnreachableDelay() {
  absl::MutexLock lock(&mu);
  return absl::Milliseconds(static_cast<int64_t>(rng.Uniform(11)));
}

void ClientLink::RunAt(absl::Time when, std::function<void()> fn) {
  group_->timer().RunAt(when, std::move(fn));
}

void ClientLink::Probe(size_t i, absl::Time deadline,
                       std::function<void(absl::StatusOr<pb::StatusResponse>)> done) {
  using Answer = absl::StatusOr<pb::StatusResponse>;
  Call<Answer>(
      i,
      [](const Replica* r, std::function<void(Answer)> reply) {
        if (r == nullptr) return reply(absl::UnavailableError("replica down"));
        raft::NodeStatus st = r->rsm->status();
        pb::StatusResponse resp;
        resp.set_id(st.id);
        resp.set_role(ToProto(st.role));
        resp.set_term(st.term);
        resp.set_leader_id(st.leader);
        resp.set_leader_address(r->context->Address(st.leader));
        reply(std::move(resp));
      },
      [done = std::move(done)](std::optional<Answer> a) {
        if (!a.has_value()) return done(absl::UnavailableError("call lost"));
        done(std::move(*a));
      });
  (void)deadline;  // a lost call ends within the legs' delays
}

// ---- Seeds ----

uint64_t TestSeed(const std::string& name) {
  uint64_t seed = 0;
  for (const char* var : {"DSTACK_TEST_SEED", "DSTACK_LAB3_SEED"}) {
    if (const char* env = std::getenv(var); env && absl::SimpleAtoi(env, &seed)) return seed;
  }
  seed = 14695981039346656037ull;  // FNV-1a
  for (unsigned char c : name) seed = (seed ^ c) * 1099511628211ull;
  return seed;
}

uint64_t CurrentTestSeed() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return TestSeed(std::string(info->test_suite_name()) + "." + info->name());
}

}  // namespace ds::rsm::testing
