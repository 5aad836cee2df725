// 6.824 lab 4B (shardkv/test_test.go) in process, on unreliable networks:
// every network (controller, groups, clients, calls between groups) loses
// 10% of the messages and call legs and delays them by 0-27 ms
// (lab4b_harness.h). Exact values (Unreliable1, Unreliable2) and a
// linearizable history (Unreliable3, checked with the project's porcupine:
// tests/lincheck).
//
// Scaled timing: Raft runs 10x faster than 6.824's (10 ms ticks, elections
// after 100-200 ms), but the unreliable network's delays are labrpc's own
// (0-27 ms per message and call leg), so every round trip of a migration
// costs what it costs in the lab: the lab's sleeps are only halved here
// (Ms(500) = 250 ms; the reliable tests divide by kLabScale = 5), so that
// the clients get operations done between configuration changes. The
// linearizability check gets 10 s instead of the lab's 1 s (a timeout passes,
// as in the lab, but checks nothing: the budget is what a loaded 2-core
// machine under ASan needs).
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/kvraft/lab3_harness.h"
#include "tests/shardkv/lab4b_harness.h"

namespace ds::shardkv::lab4b {
namespace {

uint64_t Seed() { return CurrentTestSeed(); }

// The lab's sleeps on an unreliable network: halved (see above).
absl::Duration Ms(int64_t lab_ms) { return absl::Milliseconds(lab_ms) / 2; }

// The configuration schedule of Unreliable2 and Unreliable3, while clients
// run.
void ChurnConfigurations(Cluster& cfg) {
  absl::SleepFor(Ms(150));
  cfg.Join(1);
  absl::SleepFor(Ms(500));
  cfg.Join(2);
  absl::SleepFor(Ms(500));
  cfg.Leave(0);
  absl::SleepFor(Ms(500));
  cfg.Leave(1);
  absl::SleepFor(Ms(500));
  cfg.Join(1);
  cfg.Join(0);
  absl::SleepFor(Ms(2000));
}

TEST(ShardKv4B, Unreliable1) {
  Cluster cfg({.unreliable = true, .maxraftstate = 100, .seed = Seed()});
  std::unique_ptr<Clerk> ck = cfg.MakeClerk();
  raft::Rng rng(Seed());
  ASSERT_TRUE(cfg.Join(0));
  const std::vector<std::string> keys = Keys(10);
  std::vector<std::string> values = PutAll(*ck, keys, rng, 5);
  ASSERT_FALSE(::testing::Test::HasFailure());

  ASSERT_TRUE(cfg.Join(1));
  ASSERT_TRUE(cfg.Join(2));
  ASSERT_TRUE(cfg.Leave(0));

  for (size_t ii = 0; ii < keys.size() * 2; ++ii) {
    const size_t i = ii % keys.size();
    ASSERT_TRUE(Check(*ck, keys[i], values[i]));
    const std::string x = RandString(rng, 5);
    ASSERT_TRUE(ck->Append(keys[i], x).ok()) << "Append(" << keys[i] << ")";
    values[i] += x;
  }

  ASSERT_TRUE(cfg.Join(0));
  ASSERT_TRUE(cfg.Leave(1));

  for (size_t ii = 0; ii < keys.size() * 2; ++ii) {
    const size_t i = ii % keys.size();
    ASSERT_TRUE(Check(*ck, keys[i], values[i]));
  }
}

TEST(ShardKv4B, Unreliable2) {
  Cluster cfg({.unreliable = true, .maxraftstate = 100, .seed = Seed()});
  std::unique_ptr<Clerk> ck = cfg.MakeClerk();
  raft::Rng rng(Seed());
  ASSERT_TRUE(cfg.Join(0));
  const std::vector<std::string> keys = Keys(10);
  std::vector<std::string> values = PutAll(*ck, keys, rng, 5);
  ASSERT_FALSE(::testing::Test::HasFailure());

  {
    Appenders clients(&cfg, keys, &values, /*chars=*/5, /*pause=*/absl::ZeroDuration(), rng.Next());
    ChurnConfigurations(cfg);
    // The lab stops the clients, then makes the network reliable so that
    // their last operations finish.
    std::thread stop([&clients] { clients.Stop(); });
    cfg.SetReliable(true);
    stop.join();
    std::printf("%lld appends acknowledged\n", static_cast<long long>(clients.appends()));
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!Check(*ck, keys[i], values[i])) break;
  }
}

// Random operations on random keys, recorded with their times: the history
// must be linearizable.
TEST(ShardKv4B, Unreliable3) {
  Cluster cfg({.unreliable = true, .maxraftstate = 100, .seed = Seed()});
  std::unique_ptr<Clerk> ck = cfg.MakeClerk();
  raft::Rng rng(Seed());
  ASSERT_TRUE(cfg.Join(0));
  const std::vector<std::string> keys = Keys(10);
  PutAll(*ck, keys, rng, 5);  // recorded, as the lab's client 0
  ASSERT_FALSE(::testing::Test::HasFailure());

  std::atomic<bool> done{false};
  std::atomic<int> ops{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 10; ++c) {
    clients.emplace_back([&, seed = rng.Next()] {
      std::unique_ptr<Clerk> ck1 = cfg.MakeClerk();
      raft::Rng r(seed);
      while (!done.load()) {
        const std::string& key = keys[r.Uniform(keys.size())];
        const std::string nv = RandString(r, 5);
        absl::Status st;
        if (r.Chance(500)) {
          st = ck1->Append(key, nv);
        } else if (r.Chance(100)) {
          st = ck1->Put(key, nv);
        } else {
          st = ck1->Get(key).status();
        }
        if (!st.ok()) {
          ADD_FAILURE() << "client " << ck1->label() << ": " << st;
          return;
        }
        ++ops;
      }
    });
  }
  ChurnConfigurations(cfg);
  done = true;
  cfg.SetReliable(true);
  for (std::thread& t : clients) t.join();
  std::printf("%d operations by 10 clients\n", ops.load());
  kv::lab3::CheckHistory(cfg.TakeHistory(), /*require_verdict=*/false, absl::Seconds(10));
}

}  // namespace
}  // namespace ds::shardkv::lab4b
