// Multi-process tests of the sharded KV service with the real binaries: a
// shard controller of 3 shardctrler-server processes and replica groups of 3
// shardkv-server processes each, on loopback.
//
// - Chaos: concurrent clients (ShardKvClerk threads and one-shot kvctl
//   processes) do Get/Put/Append over 24 keys while groups join and leave and
//   shards are moved (kvctl ctrl), and while replicas of the groups and of the
//   controller are killed with -9 and restarted, or paused (SIGSTOP/SIGCONT).
//   Afterwards the history is linearizable, every acknowledged Append is
//   present exactly once, and once the system is quiet every group is at the
//   latest configuration with every shard settled, and no replica keeps a key
//   of a shard it does not own (the handed-off copies were deleted).
// - A group that stays down blocks only the shards it owns: the other groups'
//   keys keep answering (and a shard moved between two live groups moves).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/ctrl_client.h"
#include "client/shardkv_client.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "tests/common/kv_checks.h"
#include "tests/common/process_cluster.h"
#include "tests/lincheck/linearizability.h"

namespace ds::shardkv {
namespace {

using ::ds::testing::ProcessCluster;
using ::ds::testing::ShardedProcessCluster;
using lincheck::HistoryRecorder;
using lincheck::OpKind;

std::unique_ptr<client::ShardKvClerk> NewClerk(ShardedProcessCluster& cluster,
                                               absl::Duration op_timeout) {
  return ::ds::testing::MustCreate<client::ShardKvClerk>(
      client::ClerkOptions{.endpoints = cluster.controllers().endpoints(),
                           .operation_timeout = op_timeout,
                           .attempt_timeout = absl::Milliseconds(500)});
}

std::unique_ptr<client::CtrlClerk> NewCtrlClerk(ShardedProcessCluster& cluster,
                                                absl::Duration op_timeout) {
  return ::ds::testing::MustCreate<client::CtrlClerk>(
      client::ClerkOptions{.endpoints = cluster.controllers().endpoints(),
                           .operation_timeout = op_timeout,
                           .attempt_timeout = absl::Milliseconds(500)});
}

// One kvctl run: exit status and output (stdout and stderr together).
struct KvctlResult {
  int code = -1;
  std::string output;
};

// Runs kvctl in sharded mode (--controllers) with `args`; its output goes to
// a file under the controller's directory (removed afterwards).
KvctlResult Kvctl(ShardedProcessCluster& cluster, const std::vector<std::string>& args) {
  static std::atomic<int> runs{0};
  const std::string out = absl::StrCat(cluster.controllers().dir(), "/kvctl-", runs++, ".out");
  std::vector<std::string> argv = {common::BinaryPath("kvctl"),
                                   "--controllers=" + cluster.controllers().endpoints_flag()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto p = common::Subprocess::Start({.argv = argv, .log_path = out});
  if (!p.ok()) {
    ADD_FAILURE() << "starting kvctl: " << p.status();
    return {};
  }
  const std::optional<int> code = (*p)->WaitFor(absl::Seconds(60));
  KvctlResult r{code.value_or(-1), common::ReadWholeFile(out).value_or("")};
  std::error_code ec;
  std::filesystem::remove(out, ec);
  EXPECT_TRUE(code.has_value()) << "kvctl " << absl::StrJoin(args, " ") << " did not exit in 60 s";
  return r;
}

// A configuration change through kvctl ctrl (join, leave, move), tried again
// while the outcome is unknown (exit 1: the controller's leader was killed or
// paused). Exit 2 after an unknown outcome is the change refused because it
// was made already ("group G is already in ..."); on the first attempt it is
// a failure. Returns whether the change was made. `unknown` (if given) counts
// the attempts of unknown outcome: each kvctl run is a new client session, so
// a move tried again after one may have been made twice.
bool ChangeConfiguration(ShardedProcessCluster& cluster, const std::vector<std::string>& args,
                         int* unknown = nullptr) {
  std::vector<std::string> argv = {"--timeout=5s", "ctrl"};
  argv.insert(argv.end(), args.begin(), args.end());
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  for (int attempt = 0; absl::Now() < deadline; ++attempt) {
    const KvctlResult r = Kvctl(cluster, argv);
    if (r.code == 0) return true;
    if (r.code == 2 && attempt > 0) return true;
    if (r.code == 1 && unknown != nullptr) ++*unknown;
    if (r.code != 1) {
      ADD_FAILURE() << "kvctl ctrl " << absl::StrJoin(args, " ") << ": exit " << r.code << ": "
                    << r.output;
      return false;
    }
  }
  ADD_FAILURE() << "kvctl ctrl " << absl::StrJoin(args, " ") << " never succeeded\n"
                << cluster.Logs();
  return false;
}

// ---------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------

// Clients doing random Get/Put/Append over `keys` put keys k<i> and `keys`
// append keys a<i> (so an acknowledged append is never overwritten), recording
// the history: ShardKvClerk threads (client ids 0..) and threads that run one
// kvctl process per operation (client ids 100..). Appended values are unique
// tokens "c<client>.<n>;" so that losses and duplicates show.
class Workload {
 public:
  Workload(ShardedProcessCluster* cluster, int clerks, int kvctls, int keys)
      : cluster_(cluster), keys_(keys) {
    for (int c = 0; c < clerks; ++c) threads_.emplace_back([this, c] { RunClerk(c); });
    for (int k = 0; k < kvctls; ++k) threads_.emplace_back([this, k] { RunKvctl(100 + k); });
  }
  ~Workload() { Stop(); }

  void Stop() {
    stop_ = true;
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

  HistoryRecorder& history() { return history_; }
  int64_t acknowledged() const { return acknowledged_.load(); }
  int64_t kvctl_acknowledged() const { return kvctl_acknowledged_.load(); }
  int64_t unknown() const { return unknown_.load(); }
  // "key/token;" -> acknowledged?
  std::map<std::string, bool> appends() {
    absl::MutexLock lock(&mu_);
    return appends_;
  }

 private:
  struct Op {
    OpKind kind;
    std::string key;
    std::string value;  // Put/Append
  };

  Op Next(std::mt19937& rng, int client, int n) const {
    const int what = static_cast<int>(rng() % 10);
    const int k = static_cast<int>(rng() % keys_);
    const std::string token = absl::StrCat("c", client, ".", n, ";");
    if (what < 4) return {OpKind::kGet, absl::StrCat(rng() % 2 ? "a" : "k", k), ""};
    if (what < 8) return {OpKind::kAppend, absl::StrCat("a", k), token};
    return {OpKind::kPut, absl::StrCat("k", k), token};
  }

  void NoteAppend(const Op& op, bool acked) {
    if (op.kind != OpKind::kAppend) return;
    absl::MutexLock lock(&mu_);
    appends_[op.key + "/" + op.value] = acked;
  }

  void RunClerk(int c) {
    std::unique_ptr<client::ShardKvClerk> clerk = NewClerk(*cluster_, absl::Seconds(4));
    std::mt19937 rng(1000 + c);
    for (int n = 0; !stop_; ++n) {
      const Op op = Next(rng, c, n);
      if (op.kind == OpKind::kGet) {
        auto h = history_.Begin(c, OpKind::kGet, op.key);
        absl::StatusOr<client::GetResult> r = clerk->Get(op.key);
        if (r.ok()) {
          history_.End(h, r->value, r->found);
          acknowledged_++;
        } else {
          history_.Discard(h);  // a failed read has no effect
        }
        continue;
      }
      NoteAppend(op, false);
      auto h = history_.Begin(c, op.kind, op.key, op.value);
      const absl::Status st = op.kind == OpKind::kAppend ? clerk->Append(op.key, op.value)
                                                         : clerk->Put(op.key, op.value);
      if (st.ok()) {
        history_.End(h);
        acknowledged_++;
        NoteAppend(op, true);
      } else {
        unknown_++;  // the operation stays open in the history
      }
    }
  }

  // One kvctl process per operation; gets with -w json, to tell a missing key
  // from an empty value.
  void RunKvctl(int c) {
    std::mt19937 rng(2000 + c);
    for (int n = 0; !stop_; ++n) {
      const Op op = Next(rng, c, n);
      if (op.kind == OpKind::kGet) {
        auto h = history_.Begin(c, OpKind::kGet, op.key);
        const KvctlResult r = Kvctl(*cluster_, {"--timeout=4s", "-w", "json", "get", op.key});
        std::optional<client::GetResult> got = ParseJsonGet(op.key, r.output);
        if (r.code == 0 && got.has_value()) {
          history_.End(h, got->value, got->found);
          acknowledged_++;
          kvctl_acknowledged_++;
        } else {
          EXPECT_EQ(r.code, 1) << "kvctl get " << op.key << ": " << r.output;
          history_.Discard(h);
        }
        continue;
      }
      NoteAppend(op, false);
      auto h = history_.Begin(c, op.kind, op.key, op.value);
      const KvctlResult r =
          Kvctl(*cluster_,
                {"--timeout=4s", op.kind == OpKind::kAppend ? "append" : "put", op.key, op.value});
      if (r.code == 0) {
        EXPECT_EQ(r.output, "OK\n");
        history_.End(h);
        acknowledged_++;
        kvctl_acknowledged_++;
        NoteAppend(op, true);
      } else {
        EXPECT_EQ(r.code, 1) << "kvctl write " << op.key << ": " << r.output;
        unknown_++;
      }
    }
  }

  // {"key":K,"found":B,"value":V} as kvctl -w json get prints it (the
  // workload's values need no escapes).
  static std::optional<client::GetResult> ParseJsonGet(const std::string& key,
                                                       const std::string& out) {
    for (const bool found : {true, false}) {
      const std::string prefix = absl::StrCat(
          "{\"key\":\"", key, "\",\"found\":", found ? "true" : "false", ",\"value\":\"");
      if (absl::StartsWith(out, prefix) && absl::EndsWith(out, "\"}\n")) {
        return client::GetResult{found, out.substr(prefix.size(), out.size() - prefix.size() - 3)};
      }
    }
    return std::nullopt;
  }

  ShardedProcessCluster* const cluster_;
  const int keys_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> acknowledged_{0};
  std::atomic<int64_t> kvctl_acknowledged_{0};
  std::atomic<int64_t> unknown_{0};
  HistoryRecorder history_;
  absl::Mutex mu_;
  std::map<std::string, bool> appends_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

// Replicas taken down for a while, at most one per cluster (so each keeps a
// majority), and brought back by Restore().
class Faults {
 public:
  explicit Faults(uint32_t seed) : rng_(seed) {}

  // Takes down one replica of `cluster`: its leader or another, killed with
  // -9 or paused.
  void TakeDown(ProcessCluster& cluster, const std::string& name) {
    int victim = -1;
    if (rng_() % 2 == 0) victim = cluster.Leader();
    if (victim < 0) victim = static_cast<int>(rng_() % cluster.size());
    const bool kill = rng_() % 2 == 0;
    if (kill) {
      cluster.Kill(victim);
      ++kills_;
    } else {
      cluster.Pause(victim);
      ++pauses_;
    }
    std::printf("  %s replica %d %s\n", name.c_str(), victim + 1, kill ? "killed" : "paused");
    down_.push_back({&cluster, victim, kill});
  }

  void Restore() {
    for (const Down& d : down_) {
      if (d.killed) {
        d.cluster->Start(d.replica);
        EXPECT_TRUE(d.cluster->WaitHealthy(d.replica).ok());
      } else {
        d.cluster->Resume(d.replica);
      }
    }
    down_.clear();
  }

  std::mt19937& rng() { return rng_; }
  // Uniform enough in [0, n).
  uint32_t Random(size_t n) { return static_cast<uint32_t>(rng_() % n); }
  int kills() const { return kills_; }
  int pauses() const { return pauses_; }

 private:
  struct Down {
    ProcessCluster* cluster;
    int replica;
    bool killed;
  };
  std::mt19937 rng_;
  std::vector<Down> down_;
  int kills_ = 0;
  int pauses_ = 0;
};

// ---------------------------------------------------------------------------
// Quiet-state checks
// ---------------------------------------------------------------------------

// What keeps the system from being settled at `config` (empty: settled):
// every replica of every group has applied `config`; each shard is serving at
// the replicas of its owner and not owned, holding no keys, everywhere else.
std::string SettleProblems(ShardedProcessCluster& cluster, const ctrl::pb::Config& config) {
  std::string problems;
  for (uint64_t gid : cluster.gids()) {
    ProcessCluster& group = cluster.group(gid);
    for (int i = 0; i < group.size(); ++i) {
      const std::string who = absl::StrCat("group ", gid, " replica ", i + 1);
      absl::StatusOr<rsm::pb::StatusResponse> st = group.Status(i);
      if (!st.ok()) {
        absl::StrAppend(&problems, who, ": ", st.status().ToString(), "\n");
        continue;
      }
      if (st->gid() != gid) absl::StrAppend(&problems, who, ": reports gid ", st->gid(), "\n");
      if (st->config_num() != config.num()) {
        absl::StrAppend(&problems, who, ": at configuration ", st->config_num(), " of ",
                        config.num(), "\n");
        continue;
      }
      if (st->shards_size() != config.shards_size()) {
        absl::StrAppend(&problems, who, ": ", st->shards_size(), " shards\n");
        continue;
      }
      for (const rsm::pb::ShardStatus& s : st->shards()) {
        const uint64_t owner = config.shards(static_cast<int>(s.shard()));
        const std::string want = owner == gid ? "serving" : "not-owned";
        if (s.state() != want || s.owner() != owner) {
          absl::StrAppend(&problems, who, ": shard ", s.shard(), " ", s.state(), " (owner ",
                          s.owner(), "), want ", want, " (owner ", owner, ")\n");
        }
        if (owner != gid && s.keys() != 0) {
          absl::StrAppend(&problems, who, ": keeps ", s.keys(), " keys of shard ", s.shard(),
                          ", owned by group ", owner, "\n");
        }
      }
    }
  }
  return problems;
}

// Waits until every group has reached the latest configuration and settled
// (SettleProblems); "" then, else what was still unsettled after `limit`.
std::string WaitSettled(ShardedProcessCluster& cluster, absl::Duration limit) {
  std::unique_ptr<client::CtrlClerk> ctrl = NewCtrlClerk(cluster, absl::Seconds(10));
  const absl::Time deadline = absl::Now() + limit;
  std::string problems = "not looked at";
  while (absl::Now() < deadline) {
    absl::StatusOr<ctrl::pb::Config> latest = ctrl->Query(-1);
    if (!latest.ok()) {
      problems = absl::StrCat("controller: ", latest.status().ToString());
    } else {
      problems = SettleProblems(cluster, *latest);
      if (problems.empty()) return "";
      problems = absl::StrCat("at configuration ", latest->num(), ":\n", problems);
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  return problems;
}

// Every key's value at the end, read linearizably through a ShardKvClerk.
::ds::testing::KeyReader ShardKvReader(ShardedProcessCluster& cluster) {
  std::shared_ptr<client::ShardKvClerk> clerk = NewClerk(cluster, absl::Seconds(20));
  return [clerk](const std::string& key) -> absl::StatusOr<std::string> {
    absl::StatusOr<client::GetResult> r = clerk->Get(key);
    if (!r.ok()) return r.status();
    return r->value;
  };
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

TEST(ShardKvProcess, ConcurrentClientsWhileGroupsMoveAndReplicasCrash) {
  ShardedProcessCluster cluster(ShardedProcessCluster::Options::Fast({1, 2, 3}));
  ASSERT_TRUE(cluster.WaitAllHealthy().ok()) << cluster.Logs();
  ASSERT_TRUE(ChangeConfiguration(cluster, {"join", cluster.JoinArg(1), cluster.JoinArg(2)}));
  std::set<uint64_t> joined = {1, 2};

  // Which replicas go down and how: from the seed (printed; set
  // SHARDKV_PROCESS_SEED to choose the same faults again).
  uint32_t seed = static_cast<uint32_t>(absl::ToUnixMicros(absl::Now()));
  if (const char* s = std::getenv("SHARDKV_PROCESS_SEED"); s != nullptr) {
    ASSERT_TRUE(absl::SimpleAtoi(s, &seed)) << "SHARDKV_PROCESS_SEED=" << s;
  }
  std::printf("fault seed %u\n", seed);
  Faults faults(seed);
  Workload workload(&cluster, /*clerks=*/3, /*kvctls=*/1, /*keys=*/24);

  // One configuration change per round (a random shard moved on "move"),
  // made while up to three replicas are down: one of a group, on even rounds
  // one of another group, on odd rounds one of the controller.
  const std::vector<std::string> plan = {"join 3", "move",    "leave 1", "move",
                                         "join 1", "leave 2", "move",    "join 2"};
  int unknown_changes = 0;
  for (size_t round = 0; round < plan.size(); ++round) {
    const absl::Time start = absl::Now();
    std::vector<uint64_t> gids = cluster.gids();
    std::shuffle(gids.begin(), gids.end(), faults.rng());
    faults.TakeDown(cluster.group(gids[0]), absl::StrCat("group ", gids[0]));
    if (round % 2 == 0) {
      faults.TakeDown(cluster.group(gids[1]), absl::StrCat("group ", gids[1]));
    } else {
      faults.TakeDown(cluster.controllers(), "controller");
    }

    const std::string& step = plan[round];
    std::vector<std::string> args;
    if (step == "move") {
      const uint32_t shard = faults.Random(10);
      std::vector<uint64_t> to(joined.begin(), joined.end());
      args = {"move", absl::StrCat(shard), absl::StrCat(to[faults.Random(to.size())])};
    } else {
      const uint64_t gid = step.back() - '0';
      if (absl::StartsWith(step, "join")) {
        args = {"join", cluster.JoinArg(gid)};
        joined.insert(gid);
      } else {
        args = {"leave", absl::StrCat(gid)};
        joined.erase(gid);
      }
    }
    std::printf("round %zu: ctrl %s\n", round, absl::StrJoin(args, " ").c_str());
    EXPECT_TRUE(ChangeConfiguration(cluster, args, &unknown_changes));
    absl::SleepFor(start + absl::Milliseconds(2500) - absl::Now());
    faults.Restore();
    absl::SleepFor(absl::Milliseconds(800));
  }
  absl::SleepFor(absl::Seconds(2));  // every replica up: the clients catch up
  workload.Stop();

  std::unique_ptr<client::CtrlClerk> ctrl = NewCtrlClerk(cluster, absl::Seconds(20));
  absl::StatusOr<uint64_t> latest = ctrl->Latest();
  ASSERT_TRUE(latest.ok()) << latest.status();
  std::printf(
      "%zu operations recorded, %lld acknowledged (%lld by kvctl), %lld writes of unknown "
      "outcome; %llu configurations (%d kvctl ctrl runs of unknown outcome); %d kills, %d "
      "pauses\n",
      workload.history().Snapshot().size(), static_cast<long long>(workload.acknowledged()),
      static_cast<long long>(workload.kvctl_acknowledged()),
      static_cast<long long>(workload.unknown()), static_cast<unsigned long long>(*latest),
      unknown_changes, faults.kills(), faults.pauses());
  if (unknown_changes == 0) {
    EXPECT_EQ(*latest, 1 + plan.size()) << "a configuration change was lost or made twice";
  } else {
    EXPECT_GE(*latest, 1 + plan.size()) << "a configuration change was lost";
  }
  EXPECT_GT(workload.acknowledged(), 100) << "the clients made too little progress\n"
                                          << cluster.Logs();
  EXPECT_GT(workload.kvctl_acknowledged(), 5);

  const std::string unsettled = WaitSettled(cluster, absl::Seconds(60));
  EXPECT_EQ(unsettled, "") << "the groups never settled at the latest configuration\n"
                           << cluster.Logs();

  ::ds::testing::ExpectLinearizable(workload.history().Snapshot());
  ::ds::testing::ExpectAppendsExactlyOnce(workload.appends(), ShardKvReader(cluster));
}

TEST(ShardKvProcess, AGroupThatStaysDownBlocksOnlyTheShardsItOwns) {
  ShardedProcessCluster cluster(ShardedProcessCluster::Options::Fast({1, 2, 3}));
  ASSERT_TRUE(cluster.WaitAllHealthy().ok()) << cluster.Logs();
  ASSERT_TRUE(ChangeConfiguration(
      cluster, {"join", cluster.JoinArg(1), cluster.JoinArg(2), cluster.JoinArg(3)}));

  // 24 keys, and where each lives (configuration 1: every group owns shards).
  std::unique_ptr<client::ShardKvClerk> clerk = NewClerk(cluster, absl::Seconds(20));
  std::map<std::string, client::Location> where;
  std::map<uint64_t, std::vector<std::string>> keys_of;  // gid -> keys
  for (int i = 0; i < 24; ++i) {
    const std::string key = absl::StrCat("key", i);
    ASSERT_TRUE(clerk->Put(key, absl::StrCat("v", i)).ok()) << key << "\n" << cluster.Logs();
    absl::StatusOr<client::Location> loc = clerk->Locate(key);
    ASSERT_TRUE(loc.ok()) << loc.status();
    ASSERT_EQ(loc->config_num, 1u);
    where[key] = *loc;
    keys_of[loc->gid].push_back(key);
  }
  for (uint64_t gid : cluster.gids()) {
    ASSERT_FALSE(keys_of[gid].empty()) << "no key of 24 in group " << gid;
  }

  // Group 2 goes down for good (every replica killed).
  constexpr uint64_t kDown = 2;
  for (int i = 0; i < cluster.group(kDown).size(); ++i) cluster.group(kDown).Kill(i);

  // Its keys time out; every other key answers, and takes writes, meanwhile.
  std::unique_ptr<client::ShardKvClerk> quick = NewClerk(cluster, absl::Milliseconds(1500));
  for (size_t n = 0; n < std::min<size_t>(3, keys_of[kDown].size()); ++n) {
    const std::string& key = keys_of[kDown][n];
    const absl::Time start = absl::Now();
    absl::StatusOr<client::GetResult> r = quick->Get(key);
    EXPECT_FALSE(r.ok()) << key << " (shard " << where[key].shard << " of the group that is down) "
                         << "answered " << r->value;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
    }
    EXPECT_GE(absl::Now() - start, absl::Milliseconds(1400));
  }
  for (const auto& [key, loc] : where) {
    if (loc.gid == kDown) continue;
    absl::StatusOr<client::GetResult> r = clerk->Get(key);
    ASSERT_TRUE(r.ok()) << key << " (group " << loc.gid << "): " << r.status();
    EXPECT_EQ(r->value, absl::StrCat("v", key.substr(3)));
    EXPECT_TRUE(clerk->Append(key, "+").ok()) << key;
  }
  // kvctl too: exit 1 for a blocked key, the value for the others.
  const std::string blocked = keys_of[kDown].front();
  KvctlResult r = Kvctl(cluster, {"--timeout=1500ms", "get", blocked});
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(absl::StartsWith(r.output, "kvctl: ")) << r.output;
  for (uint64_t gid : cluster.gids()) {
    if (gid == kDown) continue;
    const std::string& key = keys_of[gid].front();
    r = Kvctl(cluster, {"--timeout=5s", "get", key});
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_EQ(r.output, absl::StrCat("v", key.substr(3), "+\n"));
  }

  // A shard moved between the two live groups moves while group 2 is down.
  constexpr uint64_t kFrom = 1;
  constexpr uint64_t kTo = 3;
  const std::string moved = keys_of[kFrom].front();
  ASSERT_TRUE(
      ChangeConfiguration(cluster, {"move", absl::StrCat(where[moved].shard), absl::StrCat(kTo)}));
  absl::StatusOr<client::GetResult> m = NewClerk(cluster, absl::Seconds(20))->Get(moved);
  ASSERT_TRUE(m.ok()) << m.status() << "\n" << cluster.Logs();
  EXPECT_EQ(m->value, absl::StrCat("v", moved.substr(3), "+"));
  absl::StatusOr<client::Location> now = clerk->Locate(moved);
  ASSERT_TRUE(now.ok()) << now.status();
  EXPECT_EQ(now->gid, kTo);
  // The new owner serves it (the read above went there).
  ProcessCluster& owner = cluster.group(kTo);
  const int leader = owner.WaitForLeader();
  ASSERT_GE(leader, 0);
  absl::StatusOr<rsm::pb::StatusResponse> st = owner.Status(leader);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->config_num(), 2u);
  EXPECT_EQ(st->shards(static_cast<int>(where[moved].shard)).owner(), kTo);

  // Group 2 comes back from its disks; its keys answer again, unchanged.
  for (int i = 0; i < cluster.group(kDown).size(); ++i) cluster.group(kDown).Start(i);
  ASSERT_TRUE(cluster.group(kDown).WaitAllHealthy().ok()) << cluster.Logs();
  for (const std::string& key : keys_of[kDown]) {
    absl::StatusOr<client::GetResult> back = clerk->Get(key);
    ASSERT_TRUE(back.ok()) << key << ": " << back.status() << "\n" << cluster.Logs();
    EXPECT_EQ(back->value, absl::StrCat("v", key.substr(3)));
  }
  EXPECT_EQ(WaitSettled(cluster, absl::Seconds(30)), "") << cluster.Logs();
}

}  // namespace
}  // namespace ds::shardkv
