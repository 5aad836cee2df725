#include "tests/kvraft/lab3_harness.h"

#include <cstdio>
#include <functional>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/kvraft/recorded_ops.h"

namespace ds::kv::lab3 {

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

namespace {

ClusterOptions Named(ClusterOptions options) {
  if (options.name == ClusterOptions().name) options.name = "kv";
  return options;
}

}  // namespace

Cluster::Cluster(ClusterOptions options)
    : ReplicaGroup(Named(std::move(options)), [] { return std::make_unique<KvStateMachine>(); }) {}

std::unique_ptr<Clerk> Cluster::MakeClerk(std::vector<int> servers) {
  if (servers.empty()) servers = All();
  return std::make_unique<Clerk>(this, next_clerk_label_.fetch_add(1), std::move(servers),
                                 NextSeed());
}

// ---------------------------------------------------------------------------
// Clerk
// ---------------------------------------------------------------------------

// KvRequests through the simulated network to the server's own request path.
class Clerk::Transport final {
 public:
  using Link = rsm::testing::LinkTransport<client::KvTransport, pb::KvRequest, pb::KvResponse>;
  Transport(Cluster* cluster, std::vector<int> servers, uint64_t seed)
      : net(cluster, std::move(servers), seed,
            [](const rsm::ReplicaContext& replica, pb::KvRequest request, absl::Time deadline,
               std::function<void(pb::KvResponse)> done) {
              HandleKvRequest(replica, KvServiceOptions(), std::move(request), deadline,
                              std::move(done));
            }) {}
  Link net;
};

Clerk::Clerk(Cluster* cluster, int64_t label, std::vector<int> servers, uint64_t seed)
    : cluster_(cluster),
      label_(label),
      transport_(std::make_unique<Transport>(cluster, std::move(servers), seed)) {
  client::RetryOptions retry;
  retry.operation_timeout = kGiveUpAfter;
  retry.attempt_timeout = kAttemptTimeout;
  // Short pauses: a partitioned clerk should find the new leader within a
  // few election timeouts (100-200 ms here), as 6.824's clerks do.
  retry.initial_backoff = absl::Milliseconds(5);
  retry.max_backoff = absl::Milliseconds(50);
  client_ = std::make_unique<client::KvClient>(
      &transport_->net, std::make_shared<client::LeaderCache>(transport_->net.endpoints()), retry);
}

Clerk::~Clerk() = default;

void Clerk::ConnectTo(std::vector<int> servers) {
  transport_->net.link().ConnectTo(std::move(servers));
}

client::SessionState Clerk::session() const { return client_->session(); }

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

// ---------------------------------------------------------------------------
// GenericTest
// ---------------------------------------------------------------------------

std::string CheckClientAppends(int client, const std::string& value, int count) {
  size_t last = std::string::npos;
  for (int j = 0; j < count; ++j) {
    const std::string wanted = absl::StrCat("x ", client, " ", j, " y");
    const size_t off = value.find(wanted);
    if (off == std::string::npos) {
      return absl::StrCat("client ", client, ": missing element ", wanted, " in Append result ",
                          value.substr(0, 200), "...");
    }
    if (value.rfind(wanted) != off) {
      return absl::StrCat("client ", client, ": duplicate element ", wanted);
    }
    if (last != std::string::npos && off <= last) {
      return absl::StrCat("client ", client, ": wrong order for element ", wanted);
    }
    last = off;
  }
  return "";
}

void CheckHistory(const std::vector<lincheck::Operation>& ops, bool require_verdict,
                  absl::Duration budget) {
  const absl::Time start = absl::Now();
  absl::StatusOr<lincheck::LinearizabilityReport> r = lincheck::CheckKvHistory(ops, budget);
  ASSERT_TRUE(r.ok()) << r.status();
  std::printf("history: %zu operations, checked in %s\n", ops.size(),
              absl::FormatDuration(absl::Now() - start).c_str());
  EXPECT_NE(r->result, lincheck::CheckResult::kIllegal)
      << "history is not linearizable: " << r->explanation;
  if (r->result == lincheck::CheckResult::kUnknown) {
    // 6.824 assumes such a history is fine; the *Linearizable tests do not.
    std::printf("linearizability check timed out: %s\n", r->explanation.c_str());
    EXPECT_FALSE(require_verdict) << "linearizability check timed out";
  }
}

namespace {

// One client of GenericTest (6.824's run_client body); returns how many
// Appends/Puts it completed.
int RunClient(Cluster* cluster, int cli, const GenericTestOptions& o, uint64_t seed,
              const std::atomic<bool>* done) {
  std::unique_ptr<Clerk> clerk = cluster->MakeClerk();
  raft::Rng rng(seed);
  int j = 0;
  std::string last;  // the predicted value of our key (!randomkeys)
  std::string key = absl::StrCat(cli);
  if (!o.randomkeys) {
    if (absl::Status s = clerk->Put(key, ""); !s.ok()) {
      ADD_FAILURE() << "client " << cli << ": " << s;
      return 0;
    }
  }
  while (!done->load()) {
    if (o.randomkeys) key = absl::StrCat(rng.Uniform(o.clients));
    const std::string nv = absl::StrCat("x ", cli, " ", j, " y");
    if (rng.Chance(500)) {
      if (absl::Status s = clerk->Append(key, nv); !s.ok()) {
        ADD_FAILURE() << "client " << cli << ": Append: " << s;
        return j;
      }
      if (!o.randomkeys) last += nv;
      ++j;
    } else if (o.randomkeys && rng.Chance(100)) {
      if (absl::Status s = clerk->Put(key, nv); !s.ok()) {
        ADD_FAILURE() << "client " << cli << ": Put: " << s;
        return j;
      }
      ++j;
    } else {
      absl::StatusOr<std::string> v = clerk->Get(key);
      if (!v.ok()) {
        ADD_FAILURE() << "client " << cli << ": Get: " << v.status();
        return j;
      }
      if (!o.randomkeys && *v != last) {
        ADD_FAILURE() << "get wrong value, key " << key << ", wanted:\n"
                      << last << "\n, got\n"
                      << *v;
        return j;
      }
    }
  }
  return j;
}

}  // namespace

void GenericTest(const GenericTestOptions& o, uint64_t seed) {
  std::printf("seed %llu (DSTACK_TEST_SEED; threads make runs differ anyway)\n",
              static_cast<unsigned long long>(seed));
  ClusterOptions co;
  co.servers = o.servers;
  co.unreliable = o.unreliable;
  co.maxraftstate = o.maxraftstate;
  co.duplicate_per_mille = o.duplicate_per_mille;
  co.seed = seed;
  Cluster cluster(co);
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  raft::Rng rng(seed ^ 0x5bd1e995);

  for (int iteration = 0; iteration < o.iterations; ++iteration) {
    std::atomic<bool> done_clients{false};
    std::atomic<bool> done_partitioner{false};
    std::vector<int> counts(o.clients, 0);
    std::vector<std::thread> clients;
    for (int cli = 0; cli < o.clients; ++cli) {
      const uint64_t client_seed = rng.Next();
      clients.emplace_back([&, cli, client_seed] {
        counts[cli] = RunClient(&cluster, cli, o, client_seed, &done_clients);
      });
    }
    std::thread partitioner;
    if (o.partitions) {
      // Shortened from 6.824's 1 s + [0, 200 ms): about 2-4 election
      // timeouts per partition, as there.
      const uint64_t partition_seed = rng.Next();
      partitioner = std::thread([&, partition_seed] {
        raft::Rng prng(partition_seed);
        absl::SleepFor(absl::Milliseconds(400));
        while (!done_partitioner.load()) {
          std::vector<int> sides[2];
          for (int i = 0; i < cluster.n(); ++i) sides[prng.Uniform(2)].push_back(i);
          cluster.Partition(sides[0], sides[1]);
          absl::SleepFor(absl::Milliseconds(400 + static_cast<int64_t>(prng.Uniform(80))));
        }
      });
    }
    std::thread crasher;
    if (o.crash_one_every > absl::ZeroDuration()) {
      const uint64_t crash_seed = rng.Next();
      crasher = std::thread([&, crash_seed] {
        raft::Rng crng(crash_seed);
        while (!done_partitioner.load()) {
          absl::SleepFor(o.crash_one_every);
          const int victim = static_cast<int>(crng.Uniform(cluster.n()));
          cluster.ShutdownServer(victim);
          absl::SleepFor(absl::Milliseconds(100));
          cluster.StartServer(victim);
        }
      });
    }
    absl::SleepFor(o.phase);
    done_clients = true;
    done_partitioner = true;
    if (crasher.joinable()) crasher.join();
    if (o.partitions) {
      partitioner.join();
      cluster.ConnectAll();
      absl::SleepFor(absl::Milliseconds(200));  // 6.824: one election timeout (1 s)
    }
    if (o.crash) {
      for (int i = 0; i < cluster.n(); ++i) cluster.ShutdownServer(i);
      absl::SleepFor(absl::Milliseconds(100));  // 6.824: 1 s
      for (int i = 0; i < cluster.n(); ++i) cluster.StartServer(i);
      cluster.ConnectAll();
    }
    for (auto& t : clients) t.join();
    int total = 0;
    for (int cli = 0; cli < o.clients; ++cli) {
      total += counts[cli];
      if (o.randomkeys) continue;
      absl::StatusOr<std::string> v = ck->Get(absl::StrCat(cli));
      ASSERT_TRUE(v.ok()) << v.status();
      const std::string problem = CheckClientAppends(cli, *v, counts[cli]);
      EXPECT_EQ(problem, "") << "iteration " << iteration;
    }
    std::printf("iteration %d: %d writes by %d clients\n", iteration, total, o.clients);
    EXPECT_GT(total, 0) << "no client made progress";
    if (o.maxraftstate > 0) {
      // 6.824 checks after the clients are done and the servers had time to
      // snapshot; the largest replica counts.
      EXPECT_LE(cluster.LogSize(), 8 * static_cast<uint64_t>(o.maxraftstate))
          << "logs were not trimmed";
    } else {
      EXPECT_EQ(cluster.SnapshotSize(), 0u)
          << "snapshot should not be used when maxraftstate = " << o.maxraftstate;
    }
    if (!o.randomkeys) {
      // Each client's key starts the iteration with a Put("") that follows
      // every earlier operation on it, so iterations can be checked apart:
      // shorter histories, much cheaper checks. With one writer per key the
      // value predictions above already check almost everything, so 6.824's
      // 1 s budget (linearizabilityCheckTimeout) is enough here.
      CheckHistory(cluster.TakeHistory(), o.require_linearizability_verdict, absl::Seconds(1));
    }
    if (::testing::Test::HasFailure()) break;
  }
  if (o.randomkeys) {
    CheckHistory(cluster.TakeHistory(), o.require_linearizability_verdict, absl::Seconds(20));
  }
  std::printf("network: %llu Raft messages delivered (%llu snapshots), %llu lost\n",
              static_cast<unsigned long long>(cluster.net().delivered()),
              static_cast<unsigned long long>(cluster.net().snapshots_delivered()),
              static_cast<unsigned long long>(cluster.net().dropped()));
}

void GenericTestSpeed(int64_t maxraftstate, uint64_t seed) {
  // 6.824 heartbeats every 100 ms and requires 1000 Appends in 1000 x 100/3
  // ms: an operation must not wait for the next heartbeat. Ticks stay at 10 ms
  // but heartbeats go out every 10 ticks here, so the bound is 6.824's.
  ClusterOptions co;
  co.servers = 3;
  co.maxraftstate = maxraftstate;
  co.heartbeat_ticks = 10;
  co.election_ticks = 30;
  co.seed = seed;
  Cluster cluster(co);
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  ASSERT_TRUE(ck->Get("x").ok());  // wait for a leader
  constexpr int kOps = 1000;
  const absl::Time start = absl::Now();
  for (int i = 0; i < kOps; ++i) {
    ASSERT_TRUE(ck->Append("x", absl::StrCat("x 0 ", i, " y")).ok());
  }
  const absl::Duration elapsed = absl::Now() - start;
  absl::StatusOr<std::string> v = ck->Get("x");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(CheckClientAppends(0, *v, kOps), "");
  const absl::Duration heartbeat = co.tick_interval * co.heartbeat_ticks;
  std::printf("%d Appends in %s: %s/op, %.0f ops/s; log %llu bytes, snapshot %llu bytes\n", kOps,
              absl::FormatDuration(elapsed).c_str(), absl::FormatDuration(elapsed / kOps).c_str(),
              kOps / absl::ToDoubleSeconds(elapsed),
              static_cast<unsigned long long>(cluster.LogSize()),
              static_cast<unsigned long long>(cluster.SnapshotSize()));
  EXPECT_LE(elapsed, kOps * heartbeat / 3) << "Operations completed too slowly";
  if (maxraftstate > 0) {
    EXPECT_LE(cluster.LogSize(), 8 * static_cast<uint64_t>(maxraftstate));
  } else {
    EXPECT_EQ(cluster.SnapshotSize(), 0u);
  }
  CheckHistory(cluster.TakeHistory(), /*require_verdict=*/true, absl::Seconds(10));
}

}  // namespace ds::kv::lab3
