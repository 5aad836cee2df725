// 6.824 lab 3B on a reliable network: the log is trimmed by snapshots
// (maxraftstate 1000 bytes), a lagging replica catches up by InstallSnapshot,
// snapshots stay small, and replicas restart from snapshot + log.
#include "gtest/gtest.h"
#include "tests/kvraft/lab3_harness.h"

namespace ds::kv::lab3 {
namespace {

constexpr int64_t kMaxRaftState = 1000;

uint64_t Seed() { return CurrentTestSeed(); }

void Check(Clerk* ck, const std::string& key, const std::string& want) {
  absl::StatusOr<std::string> v = ck->Get(key);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, want) << "Get(" << key << ")";
}

// The majority trims its log although replica 2 lags; then replica 2 must
// catch up through InstallSnapshot to form a majority with replica 0.
TEST(KvRaft3B, SnapshotRPC) {
  Cluster cluster({.servers = 3, .maxraftstate = kMaxRaftState, .seed = Seed()});
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  ASSERT_TRUE(ck->Put("a", "A").ok());
  Check(ck.get(), "a", "A");

  // A bunch of puts into the majority partition.
  cluster.Partition({0, 1}, {2});
  {
    std::unique_ptr<Clerk> ck1 = cluster.MakeClerk({0, 1});
    for (int i = 0; i < 50; ++i) {
      ASSERT_TRUE(ck1->Put(absl::StrCat(i), absl::StrCat(i)).ok());
    }
    absl::SleepFor(absl::Milliseconds(200));  // 6.824: one election timeout (1 s)
    ASSERT_TRUE(ck1->Put("b", "B").ok());
  }
  // The majority has thrown away most of its log entries.
  EXPECT_LE(cluster.LogSize(), 8 * static_cast<uint64_t>(kMaxRaftState)) << "logs were not trimmed";

  // A group that needs the lagging replica, which has to catch up, and can
  // only do so from a snapshot: the entries it misses are gone.
  const uint64_t snapshots_before = cluster.net().snapshots_delivered();
  cluster.Partition({0, 2}, {1});
  {
    std::unique_ptr<Clerk> ck1 = cluster.MakeClerk({0, 2});
    ASSERT_TRUE(ck1->Put("c", "C").ok());
    ASSERT_TRUE(ck1->Put("d", "D").ok());
    Check(ck1.get(), "a", "A");
    Check(ck1.get(), "b", "B");
    Check(ck1.get(), "1", "1");
    Check(ck1.get(), "49", "49");
  }
  EXPECT_GT(cluster.net().snapshots_delivered(), snapshots_before) << "no InstallSnapshot";

  // Now everybody.
  cluster.ConnectAll();
  ASSERT_TRUE(ck->Put("e", "E").ok());
  Check(ck.get(), "c", "C");
  Check(ck.get(), "e", "E");
  Check(ck.get(), "1", "1");
  EXPECT_GT(cluster.SnapshotSize(), 0u) << "no replica took a snapshot";
  CheckHistory(cluster.TakeHistory(), /*require_verdict=*/true, absl::Seconds(10));
}

// Snapshots hold the KV state and the sessions, not the log: small.
TEST(KvRaft3B, SnapshotSize) {
  constexpr uint64_t kMaxSnapshotState = 500;
  Cluster cluster({.servers = 3, .maxraftstate = kMaxRaftState, .seed = Seed()});
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(ck->Put("x", "0").ok());
    Check(ck.get(), "x", "0");
    ASSERT_TRUE(ck->Put("x", "1").ok());
    Check(ck.get(), "x", "1");
  }
  EXPECT_LE(cluster.LogSize(), 8 * static_cast<uint64_t>(kMaxRaftState)) << "logs were not trimmed";
  EXPECT_GT(cluster.SnapshotSize(), 0u) << "no replica took a snapshot";
  EXPECT_LE(cluster.SnapshotSize(), kMaxSnapshotState) << "snapshot too large";
  CheckHistory(cluster.TakeHistory(), /*require_verdict=*/true, absl::Seconds(10));
}

// TestSpeed3B.
TEST(KvRaft3B, SpeedSnapshot) { GenericTestSpeed(kMaxRaftState, Seed()); }

TEST(KvRaft3B, SnapshotRecover) {
  GenericTest({.clients = 1, .servers = 5, .crash = true, .maxraftstate = kMaxRaftState}, Seed());
}

TEST(KvRaft3B, SnapshotRecoverManyClients) {
  GenericTest({.clients = 20, .servers = 5, .crash = true, .maxraftstate = kMaxRaftState}, Seed());
}

// Beyond 6.824, which only restarts every replica at once between phases:
// one replica at a time crashes and restarts from snapshot + log while many
// clients keep the log moving fast, so restarts and InstallSnapshot race
// with snapshots being taken.
TEST(KvRaftExtra, CrashOneAtATimeWhileSnapshotting) {
  GenericTest({.clients = 5,
               .servers = 5,
               .crash = true,
               .maxraftstate = kMaxRaftState,
               .crash_one_every = absl::Milliseconds(200)},
              Seed());
}

// Beyond 6.824, whose random-key (checker-as-oracle) tests run on an
// unreliable network and so see few operations: the same on a reliable one,
// thousands of operations from 15 clients on shared keys, with partitions,
// crashes and snapshots.
TEST(KvRaftExtra, ReliablePartitionRecoverSnapshotLinearizable) {
  GenericTest({.clients = 15,
               .servers = 5,
               .crash = true,
               .partitions = true,
               .maxraftstate = kMaxRaftState,
               .randomkeys = true,
               // Short phases: the checker's cost grows fast with the
               // operations per key, and here a verdict is required.
               .phase = absl::Milliseconds(700),
               .require_linearizability_verdict = true},
              Seed());
}

}  // namespace
}  // namespace ds::kv::lab3
