// 6.824 lab 4B (shardkv/test_test.go) in process: static sharding, join and
// leave, snapshots, replicas that miss configuration changes; and beyond the
// lab, a group that stays down blocks only its own shards. The harness is
// lab4b_harness.h: 3 controller replicas, groups 100-102 of 3 replicas.
//
// Scaled timing: Raft runs 10x faster than 6.824's (10 ms ticks, elections
// after 100-200 ms); the lab's sleeps are divided by kLabScale (5):
// Scaled(1 s) = 200 ms. TestStaticShards' "2 s without a new completion"
// becomes: every Get of a live group's shard completes (within 10 s), then
// 400 ms (Scaled(2 s)) pass in which no other Get may complete.
#include <algorithm>
#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/shardkv/lab4b_harness.h"

namespace ds::shardkv::lab4b {
namespace {

uint64_t Seed() { return CurrentTestSeed(); }

// Check every key, then append 20 (or `chars`) random characters to it.
void CheckAndAppend(Clerk& ck, const std::vector<std::string>& keys,
                    std::vector<std::string>& values, raft::Rng& rng, int chars) {
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!Check(ck, keys[i], values[i])) return;
    const std::string x = RandString(rng, chars);
    ASSERT_TRUE(ck.Append(keys[i], x).ok()) << "Append(" << keys[i] << ")";
    values[i] += x;
  }
}

// Static 2-way sharding, without shard movement: with group 101 down, the
// Gets of keys in its shards block (never return stale or empty data) and
// all the others complete. The lab expects exactly 5 of 10 with its
// key2shard; which ones here comes from the real hash and the configuration.
TEST(ShardKv4B, StaticShards) {
  Cluster cfg({.seed = Seed()});
  std::unique_ptr<Clerk> ck = cfg.MakeClerk();
  raft::Rng rng(Seed());
  ASSERT_TRUE(cfg.Join(0));
  ASSERT_TRUE(cfg.Join(1));

  const std::vector<std::string> keys = Keys(10);
  std::vector<std::string> values = PutAll(*ck, keys, rng, 20);
  ASSERT_FALSE(::testing::Test::HasFailure());
  CheckAll(*ck, keys, values);

  // Make sure that the data really is sharded by shutting down one group
  // and checking that some Gets don't succeed.
  cfg.ShutdownGroup(1);
  cfg.CheckLogs();  // forbid snapshots

  const ctrl::pb::Config config = cfg.Query();
  std::set<std::string> live;  // keys of group 100's shards: these must complete
  for (const std::string& k : keys) {
    if (OwnerOf(config, k) == Cluster::Gid(0)) live.insert(k);
  }
  std::printf("configuration %llu: %zu of %zu keys on the live group 100 (%s)\n",
              static_cast<unsigned long long>(config.num()), live.size(), keys.size(),
              absl::StrJoin(live, ",").c_str());

  absl::Mutex mu;
  std::set<std::string> completed;
  std::vector<std::thread> gets;
  for (size_t i = 0; i < keys.size(); ++i) {
    gets.emplace_back([&, i] {
      std::unique_ptr<Clerk> ck1 = cfg.MakeClerk();  // only one call allowed per client
      Check(*ck1, keys[i], values[i]);
      absl::MutexLock lock(&mu);
      completed.insert(keys[i]);
    });
  }
  auto live_done = [&] {
    mu.AssertReaderHeld();
    return std::includes(completed.begin(), completed.end(), live.begin(), live.end());
  };
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(&live_done), absl::Seconds(10)))
        << "Gets of the live group's keys did not complete; completed: "
        << absl::StrJoin(completed, ",");
  }
  absl::SleepFor(Scaled(absl::Seconds(2)));
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(completed, live) << "expected exactly the Gets of group 100's shards to complete "
                                  "with group 101 dead";
  }

  // Bring the crashed group back to life: the blocked Gets complete.
  cfg.StartGroup(1);
  for (std::thread& t : gets) t.join();
  CheckAll(*ck, keys, values);
}

TEST(ShardKv4B, JoinLeave) {
  Cluster cfg({.seed = Seed()});
  std::unique_ptr<Clerk> ck = cfg.MakeClerk();
  raft::Rng rng(Seed());
  ASSERT_TRUE(cfg.Join(0));

  const std::vector<std::string> keys = Keys(10);
  std::vector<std::string> values = PutAll(*ck, keys, rng, 5);
  ASSERT_FALSE(::testing::Test::HasFailure());
  CheckAll(*ck, keys, values);

  ASSERT_TRUE(cfg.Join(1));
  CheckAndAppend(*ck, keys, values, rng, 5);
  ASSERT_TRUE(cfg.Leave(0));
  CheckAndAppend(*ck, keys, values, rng, 5);

  // Allow time for shards to transfer.
  absl::SleepFor(Scaled(absl::Seconds(1)));
  cfg.CheckLogs();
  // After leave(0) the data lives in group 101: 100 can be dead.
  cfg.ShutdownGroup(0);
  CheckAll(*ck, keys, values);
}

// Snapshots (maxraftstate 1000) carry the data, shard ownership and
// configuration progress: all three groups restart from them.
TEST(ShardKv4B, Snapshot) {
  Cluster cfg({.maxraftstate = 1000, .seed = Seed()});
  std::unique_ptr<Clerk> ck = cfg.MakeClerk();
  raft::Rng rng(Seed());
  ASSERT_TRUE(cfg.Join(0));

  const std::vector<std::string> keys = Keys(30);
  std::vector<std::string> values = PutAll(*ck, keys, rng, 20);
  ASSERT_FALSE(::testing::Test::HasFailure());
  CheckAll(*ck, keys, values);

  ASSERT_TRUE(cfg.Join(1));
  ASSERT_TRUE(cfg.Join(2));
  ASSERT_TRUE(cfg.Leave(0));
  CheckAndAppend(*ck, keys, values, rng, 20);

  ASSERT_TRUE(cfg.Leave(1));
  ASSERT_TRUE(cfg.Join(0));
  CheckAndAppend(*ck, keys, values, rng, 20);

  absl::SleepFor(Scaled(absl::Seconds(1)));
  CheckAll(*ck, keys, values);
  absl::SleepFor(Scaled(absl::Seconds(1)));
  cfg.CheckLogs();

  for (int gi = 0; gi < 3; ++gi) cfg.ShutdownGroup(gi);
  for (int gi = 0; gi < 3; ++gi) cfg.StartGroup(gi);
  CheckAll(*ck, keys, values);
}

// Servers that miss several configuration changes (each group keeps a
// majority) catch up, one configuration at a time, in order.
TEST(ShardKv4B, MissChange) {
  Cluster cfg({.maxraftstate = 1000, .seed = Seed()});
  std::unique_ptr<Clerk> ck = cfg.MakeClerk();
  raft::Rng rng(Seed());
  ASSERT_TRUE(cfg.Join(0));

  const std::vector<std::string> keys = Keys(10);
  std::vector<std::string> values = PutAll(*ck, keys, rng, 20);
  ASSERT_FALSE(::testing::Test::HasFailure());
  CheckAll(*ck, keys, values);

  ASSERT_TRUE(cfg.Join(1));

  for (int gi = 0; gi < 3; ++gi) cfg.ShutdownServer(gi, 0);
  ASSERT_TRUE(cfg.Join(2));
  ASSERT_TRUE(cfg.Leave(1));
  ASSERT_TRUE(cfg.Leave(0));
  CheckAndAppend(*ck, keys, values, rng, 20);

  ASSERT_TRUE(cfg.Join(1));
  CheckAndAppend(*ck, keys, values, rng, 20);

  for (int gi = 0; gi < 3; ++gi) cfg.StartServer(gi, 0);
  CheckAndAppend(*ck, keys, values, rng, 20);

  absl::SleepFor(Scaled(absl::Seconds(2)));

  for (int gi = 0; gi < 3; ++gi) cfg.ShutdownServer(gi, 1);
  ASSERT_TRUE(cfg.Join(0));
  ASSERT_TRUE(cfg.Leave(2));
  CheckAndAppend(*ck, keys, values, rng, 20);

  for (int gi = 0; gi < 3; ++gi) cfg.StartServer(gi, 1);
  CheckAll(*ck, keys, values);
}

// Beyond the lab (issue 12): a group that stays down blocks only the shards
// it owns. While group 101 is down, clients keep reading and appending the
// keys of the other groups' shards, each operation promptly; an operation on
// a key of 101's shards never completes (it gives up after its deadline).
TEST(ShardKv4B, GroupDownBlocksOnlyItsShards) {
  Cluster cfg({.seed = Seed()});
  std::unique_ptr<Clerk> ck = cfg.MakeClerk();
  raft::Rng rng(Seed());
  ASSERT_TRUE(cfg.JoinM({0, 1, 2}));

  const std::vector<std::string> keys = Keys(20);
  std::vector<std::string> values = PutAll(*ck, keys, rng, 5);
  ASSERT_FALSE(::testing::Test::HasFailure());
  CheckAll(*ck, keys, values);

  const ctrl::pb::Config config = cfg.Query();
  std::vector<size_t> live;
  std::vector<size_t> dead;
  for (size_t i = 0; i < keys.size(); ++i) {
    (OwnerOf(config, keys[i]) == Cluster::Gid(1) ? dead : live).push_back(i);
  }
  ASSERT_FALSE(live.empty());
  ASSERT_FALSE(dead.empty());
  cfg.ShutdownGroup(1);

  // Operations on 101's keys: each gives up after 1 s without an answer.
  std::vector<std::thread> blocked;
  std::atomic<int> answered{0};
  for (size_t i : dead) {
    blocked.emplace_back([&, i] {
      std::unique_ptr<Clerk> ck1 = cfg.MakeClerk(/*give_up_after=*/absl::Seconds(1));
      absl::StatusOr<std::string> v = ck1->Get(keys[i]);
      if (v.ok()) ++answered;
      EXPECT_EQ(v.status().code(), absl::StatusCode::kDeadlineExceeded)
          << "Get(" << keys[i] << ") with its group down: " << v.status();
      absl::Status st = ck1->Append(keys[i], "lost?");
      if (st.ok()) ++answered;
      EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded)
          << "Append(" << keys[i] << ") with its group down: " << st;
    });
  }
  // Meanwhile the other keys answer, each operation within 2 s (a few
  // election timeouts; nothing waits for the dead group).
  absl::Duration slowest;
  const absl::Time end = absl::Now() + absl::Seconds(1);
  int ops = 0;
  while (absl::Now() < end && !::testing::Test::HasFailure()) {
    for (size_t i : live) {
      const absl::Time start = absl::Now();
      Check(*ck, keys[i], values[i]);
      const std::string x = RandString(rng, 5);
      ASSERT_TRUE(ck->Append(keys[i], x).ok());
      values[i] += x;
      slowest = std::max(slowest, (absl::Now() - start) / 2);
      ops += 2;
    }
  }
  for (std::thread& t : blocked) t.join();
  std::printf("%d operations on the live groups' %zu keys, slowest %s; %zu keys blocked\n", ops,
              live.size(), absl::FormatDuration(slowest).c_str(), dead.size());
  EXPECT_EQ(answered.load(), 0);
  EXPECT_LE(slowest, absl::Seconds(2));

  // 101 back: its keys answer again, with their old values (the Appends
  // that gave up never reached a replica of it).
  cfg.StartGroup(1);
  CheckAll(*ck, keys, values);
}

}  // namespace
}  // namespace ds::shardkv::lab4b
