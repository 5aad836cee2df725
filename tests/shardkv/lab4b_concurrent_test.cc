// 6.824 lab 4B (shardkv/test_test.go) in process: clients appending while
// configurations change and groups crash and restart (lab4b_harness.h).
// Every key must end with exactly the appends its client saw acknowledged:
// none lost, none applied twice, across migrations and restarts.
//
// Scaled timing: Raft runs 10x faster than 6.824's (10 ms ticks, elections
// after 100-200 ms); every sleep of the lab (the schedule of joins, leaves
// and crashes, the clients' pauses between appends, TestConcurrent3's 12 s)
// is divided by kLabScale (5): Scaled(500 ms) = 100 ms.
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/shardkv/lab4b_harness.h"

namespace ds::shardkv::lab4b {
namespace {

uint64_t Seed() { return CurrentTestSeed(); }

absl::Duration Ms(int64_t lab_ms) { return Scaled(absl::Milliseconds(lab_ms)); }

// Concurrent puts and configuration changes, with every group crashed and
// restarted (maxraftstate 100: a snapshot after nearly every entry).
TEST(ShardKv4B, Concurrent1) {
  Cluster cfg({.maxraftstate = 100, .seed = Seed()});
  std::unique_ptr<Clerk> ck = cfg.MakeClerk();
  raft::Rng rng(Seed());
  ASSERT_TRUE(cfg.Join(0));
  const std::vector<std::string> keys = Keys(10);
  std::vector<std::string> values = PutAll(*ck, keys, rng, 5);
  ASSERT_FALSE(::testing::Test::HasFailure());

  Appenders clients(&cfg, keys, &values, /*chars=*/5, /*pause=*/Ms(10), rng.Next());
  absl::SleepFor(Ms(150));
  cfg.Join(1);
  absl::SleepFor(Ms(500));
  cfg.Join(2);
  absl::SleepFor(Ms(500));
  cfg.Leave(0);

  cfg.ShutdownGroup(0);
  absl::SleepFor(Ms(100));
  cfg.ShutdownGroup(1);
  absl::SleepFor(Ms(100));
  cfg.ShutdownGroup(2);

  cfg.Leave(2);

  absl::SleepFor(Ms(100));
  cfg.StartGroup(0);
  cfg.StartGroup(1);
  cfg.StartGroup(2);

  absl::SleepFor(Ms(100));
  cfg.Join(0);
  cfg.Leave(1);
  absl::SleepFor(Ms(500));
  cfg.Join(1);

  absl::SleepFor(Ms(1000));
  clients.Stop();
  std::printf("%lld appends acknowledged\n", static_cast<long long>(clients.appends()));
  CheckAll(*ck, keys, values);
}

// The various sources from which a restarting group might need to fetch
// shard contents.
TEST(ShardKv4B, Concurrent2) {
  Cluster cfg({.seed = Seed()});
  std::unique_ptr<Clerk> ck = cfg.MakeClerk();
  raft::Rng rng(Seed());
  ASSERT_TRUE(cfg.Join(1));
  ASSERT_TRUE(cfg.Join(0));
  ASSERT_TRUE(cfg.Join(2));
  const std::vector<std::string> keys = Keys(10);
  std::vector<std::string> values = PutAll(*ck, keys, rng, 1);
  ASSERT_FALSE(::testing::Test::HasFailure());

  Appenders clients(&cfg, keys, &values, /*chars=*/1, /*pause=*/Ms(50), rng.Next());
  cfg.Leave(0);
  cfg.Leave(2);
  absl::SleepFor(Ms(3000));
  cfg.Join(0);
  cfg.Join(2);
  cfg.Leave(1);
  absl::SleepFor(Ms(3000));
  cfg.Join(1);
  cfg.Leave(0);
  cfg.Leave(2);
  absl::SleepFor(Ms(3000));

  cfg.ShutdownGroup(1);
  cfg.ShutdownGroup(2);
  absl::SleepFor(Ms(1000));
  cfg.StartGroup(1);
  cfg.StartGroup(2);

  absl::SleepFor(Ms(2000));
  clients.Stop();
  std::printf("%lld appends acknowledged\n", static_cast<long long>(clients.appends()));
  CheckAll(*ck, keys, values);
}

// Concurrent configuration changes and full restarts (maxraftstate 300),
// clients appending without pause.
TEST(ShardKv4B, Concurrent3) {
  Cluster cfg({.maxraftstate = 300, .seed = Seed()});
  std::unique_ptr<Clerk> ck = cfg.MakeClerk();
  raft::Rng rng(Seed());
  ASSERT_TRUE(cfg.Join(0));
  const std::vector<std::string> keys = Keys(10);
  std::vector<std::string> values = PutAll(*ck, keys, rng, 1);
  ASSERT_FALSE(::testing::Test::HasFailure());

  Appenders clients(&cfg, keys, &values, /*chars=*/1, /*pause=*/absl::ZeroDuration(), rng.Next());
  auto random_pause = [&rng] { return Ms(static_cast<int64_t>(rng.Uniform(900))); };
  const absl::Time t0 = absl::Now();
  int rounds = 0;
  while (absl::Now() - t0 < Ms(12000) && !::testing::Test::HasFailure()) {
    cfg.Join(2);
    cfg.Join(1);
    absl::SleepFor(random_pause());
    for (int gi = 0; gi < 3; ++gi) cfg.ShutdownGroup(gi);
    for (int gi = 0; gi < 3; ++gi) cfg.StartGroup(gi);
    absl::SleepFor(random_pause());
    cfg.Leave(1);
    cfg.Leave(2);
    absl::SleepFor(random_pause());
    ++rounds;
  }

  absl::SleepFor(Ms(2000));
  clients.Stop();
  std::printf("%d rounds of changes and restarts; %lld appends acknowledged\n", rounds,
              static_cast<long long>(clients.appends()));
  CheckAll(*ck, keys, values);
}

}  // namespace
}  // namespace ds::shardkv::lab4b
