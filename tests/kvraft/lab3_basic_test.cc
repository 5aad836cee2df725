// 6.824 lab 3A without crashes: basic operation, speed, concurrency, an
// unreliable network and partitions (lab3_harness.h says what is shortened).
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/kvraft/lab3_harness.h"

namespace ds::kv::lab3 {
namespace {

uint64_t Seed() { return CurrentTestSeed(); }

TEST(KvRaft3A, Basic) { GenericTest({.clients = 1, .servers = 5}, Seed()); }

TEST(KvRaft3A, Speed) { GenericTestSpeed(/*maxraftstate=*/-1, Seed()); }

TEST(KvRaft3A, Concurrent) { GenericTest({.clients = 5, .servers = 5}, Seed()); }

TEST(KvRaft3A, Unreliable) {
  GenericTest({.clients = 5, .servers = 5, .unreliable = true}, Seed());
}

// Five clients append to one key over an unreliable network: every element
// exactly once, each client's in order (checkConcurrentAppends).
TEST(KvRaft3A, UnreliableOneKey) {
  Cluster cluster({.servers = 3, .unreliable = true, .seed = Seed()});
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  ASSERT_TRUE(ck->Put("k", "").ok());
  constexpr int kClients = 5;
  constexpr int kAppends = 10;
  std::vector<std::thread> clients;
  for (int me = 0; me < kClients; ++me) {
    clients.emplace_back([&cluster, me] {
      std::unique_ptr<Clerk> clerk = cluster.MakeClerk();
      for (int n = 0; n < kAppends; ++n) {
        absl::Status s = clerk->Append("k", absl::StrCat("x ", me, " ", n, " y"));
        if (!s.ok()) {
          ADD_FAILURE() << s;
          return;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  absl::StatusOr<std::string> v = ck->Get("k");
  ASSERT_TRUE(v.ok()) << v.status();
  for (int me = 0; me < kClients; ++me) EXPECT_EQ(CheckClientAppends(me, *v, kAppends), "");
  CheckHistory(cluster.TakeHistory(), /*require_verdict=*/true, absl::Seconds(10));
}

// A leader cut off in the minority makes no progress; the majority does; the
// minority's pending Put completes after the partition heals.
TEST(KvRaft3A, OnePartition) {
  Cluster cluster({.servers = 5, .seed = Seed()});
  std::unique_ptr<Clerk> ck = cluster.MakeClerk();
  ASSERT_TRUE(ck->Put("1", "13").ok());

  auto [p1, p2] = cluster.MakePartition();
  ASSERT_NE(cluster.Leader(), -1);
  cluster.Partition(p1, p2);
  std::unique_ptr<Clerk> ckp1 = cluster.MakeClerk(p1);   // connect ckp1 to p1
  std::unique_ptr<Clerk> ckp2a = cluster.MakeClerk(p2);  // connect ckp2a to p2
  std::unique_ptr<Clerk> ckp2b = cluster.MakeClerk(p2);  // connect ckp2b to p2

  // Progress in the majority.
  ASSERT_TRUE(ckp1->Put("1", "14").ok());
  EXPECT_EQ(ckp1->Get("1").value_or("?"), "14");

  // No progress in the minority.
  absl::Notification put_done;
  absl::Notification get_done;
  std::thread put([&] {
    EXPECT_TRUE(ckp2a->Put("1", "15").ok());
    put_done.Notify();
  });
  std::thread get([&] {
    ckp2b->Get("1").IgnoreError();  // its value is checked by the history
    get_done.Notify();
  });
  absl::SleepFor(absl::Seconds(1));
  EXPECT_FALSE(put_done.HasBeenNotified()) << "Put in minority completed";
  EXPECT_FALSE(get_done.HasBeenNotified()) << "Get in minority completed";
  EXPECT_EQ(ckp1->Get("1").value_or("?"), "14");
  ASSERT_TRUE(ckp1->Put("1", "16").ok());
  EXPECT_EQ(ckp1->Get("1").value_or("?"), "16");

  // Completion after heal.
  cluster.ConnectAll();
  ckp2a->ConnectTo(cluster.All());
  ckp2b->ConnectTo(cluster.All());
  absl::SleepFor(absl::Milliseconds(200));  // 6.824: one election timeout (1 s)
  EXPECT_TRUE(put_done.WaitForNotificationWithTimeout(absl::Seconds(3))) << "Put did not complete";
  put.join();
  get.join();
  EXPECT_EQ(ck->Get("1").value_or("?"), "15");

  CheckHistory(cluster.TakeHistory(), /*require_verdict=*/true, absl::Seconds(10));
}

TEST(KvRaft3A, ManyPartitionsOneClient) {
  GenericTest({.clients = 1, .servers = 5, .partitions = true}, Seed());
}

TEST(KvRaft3A, ManyPartitionsManyClients) {
  GenericTest({.clients = 5, .servers = 5, .partitions = true}, Seed());
}

}  // namespace
}  // namespace ds::kv::lab3
