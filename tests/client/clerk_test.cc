#include "client/clerk.h"

#include "gtest/gtest.h"
#include "tests/client/fake_kv_service.h"

namespace ds::client {
namespace {

using testing::FakeKvCluster;

std::unique_ptr<Clerk> MakeClerk(const FakeKvCluster& cluster,
                                 absl::Duration op_timeout = absl::Seconds(10),
                                 absl::Duration attempt = absl::Seconds(1)) {
  auto clerk = Clerk::Create({.endpoints = cluster.endpoints(),
                              .operation_timeout = op_timeout,
                              .attempt_timeout = attempt});
  EXPECT_TRUE(clerk.ok()) << clerk.status();
  return std::move(*clerk);
}

TEST(ParseEndpoints, AcceptsHostPortListsAndRejectsGarbage) {
  auto ok = ParseEndpoints("127.0.0.1:1, localhost:65535");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, (std::vector<std::string>{"127.0.0.1:1", "localhost:65535"}));
  EXPECT_FALSE(ParseEndpoints("").ok());
  EXPECT_FALSE(ParseEndpoints("127.0.0.1").ok());
  EXPECT_FALSE(ParseEndpoints("127.0.0.1:0").ok());
  EXPECT_FALSE(ParseEndpoints("h:70000").ok());
  EXPECT_FALSE(ParseEndpoints(":80").ok());
  EXPECT_FALSE(ParseEndpoints("h:80x").ok());
}

TEST(Clerk, CreateRejectsNoEndpoints) {
  EXPECT_EQ(Clerk::Create({}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Clerk, FollowsLeaderHintAndCachesTheLeader) {
  FakeKvCluster cluster(3);
  cluster.set_leader(2);
  auto clerk = MakeClerk(cluster);
  // Register (which finds the leader), then Put.
  ASSERT_TRUE(clerk->Put("k", "v1").ok());
  EXPECT_EQ(cluster.calls(0), 1);  // redirected straight to replica 2 by the hint
  EXPECT_EQ(cluster.calls(1), 0);
  ASSERT_TRUE(clerk->Append("k", "+v2").ok());
  auto got = clerk->Get("k");
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->found);
  EXPECT_EQ(got->value, "v1+v2");
  EXPECT_EQ(cluster.calls(0), 1) << "the leader was not cached";
  EXPECT_EQ(cluster.calls(2), 4);  // Register, Put, Append, Get
}

TEST(Clerk, WithoutHintsTriesReplicasInTurn) {
  FakeKvCluster cluster(3);
  cluster.set_send_hints(false);
  cluster.set_leader(1);
  auto clerk = MakeClerk(cluster);
  ASSERT_TRUE(clerk->Put("a", "1").ok());
  EXPECT_EQ(cluster.value("a"), "1");
  cluster.set_leader(0);  // leader change: the cached replica now refuses
  ASSERT_TRUE(clerk->Put("a", "2").ok());
  EXPECT_EQ(cluster.value("a"), "2");
}

TEST(Clerk, RetryAfterLostReplyAppliesOnce) {
  FakeKvCluster cluster(3);
  cluster.set_leader(0);
  auto clerk = MakeClerk(cluster);
  ASSERT_TRUE(clerk->Put("x", "").ok());  // opens the session
  cluster.set_lose_replies(2);            // applied, but the clerk hears "unavailable" twice
  ASSERT_TRUE(clerk->Append("x", "a").ok());
  ASSERT_TRUE(clerk->Append("x", "b").ok());
  EXPECT_EQ(cluster.value("x"), "ab");
  EXPECT_EQ(cluster.applied_writes(), 3);
}

TEST(Clerk, RegistersLazilyBeforeTheFirstWriteOnly) {
  FakeKvCluster cluster(3);
  cluster.set_leader(1);
  auto clerk = MakeClerk(cluster);
  EXPECT_EQ(clerk->client_id(), 0u);
  ASSERT_TRUE(clerk->Get("k").ok());  // reads need no session
  EXPECT_EQ(cluster.registrations(), 0);
  ASSERT_TRUE(clerk->Put("k", "1").ok());
  EXPECT_EQ(cluster.registrations(), 1);
  const uint64_t id = clerk->client_id();
  EXPECT_NE(id, 0u);
  ASSERT_TRUE(clerk->Append("k", "2").ok());
  ASSERT_TRUE(clerk->Delete("k").ok());
  EXPECT_EQ(cluster.registrations(), 1);
  EXPECT_EQ(clerk->client_id(), id);
  EXPECT_EQ(clerk->last_sequence(), 3u);
  EXPECT_EQ(cluster.applied_writes(), 3);
}

TEST(Clerk, RegisterWithALostReplyIsRetried) {
  FakeKvCluster cluster(3);
  cluster.set_leader(0);
  auto clerk = MakeClerk(cluster);
  cluster.set_lose_replies(1);  // the first session is opened but the clerk never hears
  ASSERT_TRUE(clerk->Put("k", "v").ok());
  EXPECT_EQ(cluster.registrations(), 2);  // the orphan session is harmless
  EXPECT_EQ(cluster.applied_writes(), 1);
  EXPECT_EQ(cluster.value("k"), "v");
}

TEST(Clerk, RegisterFailureFailsTheWriteWithinItsDeadline) {
  FakeKvCluster cluster(2);
  cluster.set_leader(-1);
  auto clerk = MakeClerk(cluster, absl::Milliseconds(600), absl::Milliseconds(200));
  absl::Time start = absl::Now();
  absl::Status st = clerk->Append("k", "v");
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  EXPECT_NE(st.message().find("register"), absl::string_view::npos) << st;
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_EQ(clerk->client_id(), 0u);
  EXPECT_EQ(clerk->last_sequence(), 0u);  // no sequence number spent
  cluster.set_leader(0);
  ASSERT_TRUE(clerk->Append("k", "v").ok());
  EXPECT_EQ(clerk->last_sequence(), 1u);
}

TEST(Clerk, ExpiredSessionFailsTheWriteWithoutResendingIt) {
  FakeKvCluster cluster(3);
  cluster.set_leader(0);
  auto clerk = MakeClerk(cluster);
  ASSERT_TRUE(clerk->Append("k", "a").ok());
  const uint64_t old_id = clerk->client_id();
  cluster.ExpireSessions();
  absl::Status st = clerk->Append("k", "b");
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_EQ(cluster.value("k"), "a");
  EXPECT_EQ(cluster.registrations(), 1) << "re-registered to re-send the write";
  EXPECT_EQ(cluster.applied_writes(), 1);
  EXPECT_EQ(clerk->client_id(), 0u);  // the dead session is dropped...
  // ... and the caller's next write opens a new one.
  ASSERT_TRUE(clerk->Append("k", "c").ok());
  EXPECT_EQ(cluster.registrations(), 2);
  EXPECT_NE(clerk->client_id(), old_id);
  EXPECT_EQ(cluster.value("k"), "ac");
}

TEST(Clerk, NonzeroClientIdResumesARegisteredSession) {
  FakeKvCluster cluster(1);
  auto first = MakeClerk(cluster);
  ASSERT_TRUE(first->Append("k", "a").ok());
  ASSERT_TRUE(first->Append("k", "b").ok());
  auto resumed = Clerk::Create({.endpoints = cluster.endpoints(),
                                .client_id = first->client_id(),
                                .last_sequence = first->last_sequence()});
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_TRUE((*resumed)->Append("k", "c").ok());
  EXPECT_EQ(cluster.registrations(), 1);
  EXPECT_EQ((*resumed)->last_sequence(), 3u);
  EXPECT_EQ(cluster.value("k"), "abc");
}

TEST(Clerk, UnknownClientIdIsRefusedNotRegistered) {
  FakeKvCluster cluster(1);
  auto clerk = Clerk::Create({.endpoints = cluster.endpoints(), .client_id = 12345});
  ASSERT_TRUE(clerk.ok()) << clerk.status();
  EXPECT_EQ((*clerk)->Put("k", "v").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cluster.registrations(), 0);
  EXPECT_EQ(cluster.applied_writes(), 0);
}

TEST(Clerk, SlowReplicaTimesOutAndNextOneIsTried) {
  FakeKvCluster cluster(2);
  cluster.set_send_hints(false);
  cluster.set_leader(1);
  cluster.set_slow(0, 1, absl::Seconds(2));
  auto clerk = MakeClerk(cluster, absl::Seconds(10), absl::Milliseconds(300));
  absl::Time start = absl::Now();
  ASSERT_TRUE(clerk->Put("k", "v").ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_EQ(cluster.value("k"), "v");
}

TEST(Clerk, GivesUpWithDeadlineExceededWhenNoLeader) {
  FakeKvCluster cluster(3);
  cluster.set_leader(-1);
  auto clerk = MakeClerk(cluster, absl::Milliseconds(700), absl::Milliseconds(200));
  absl::Time start = absl::Now();
  absl::Status st = clerk->Put("k", "v");
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  EXPECT_NE(st.message().find("not the leader"), absl::string_view::npos) << st;
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_EQ(cluster.applied_writes(), 0);
}

TEST(Clerk, InvalidArgumentIsNotRetried) {
  FakeKvCluster cluster(3);
  cluster.set_leader(0);
  auto clerk = MakeClerk(cluster);
  absl::Status st = clerk->Put("", "v");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_EQ(cluster.calls(0) + cluster.calls(1) + cluster.calls(2), 2);  // Register, Put
}

TEST(Clerk, UnreachableReplicasTimeOut) {
  auto clerk = Clerk::Create({.endpoints = {"127.0.0.1:1"},
                              .operation_timeout = absl::Milliseconds(500),
                              .attempt_timeout = absl::Milliseconds(100)});
  ASSERT_TRUE(clerk.ok());
  EXPECT_EQ((*clerk)->Get("k").status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(Clerk, MissingKeyIsNotFoundWithEmptyValue) {
  FakeKvCluster cluster(1);
  auto clerk = MakeClerk(cluster);
  auto got = clerk->Get("nope");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->found);
  EXPECT_EQ(got->value, "");
  auto del = clerk->Delete("nope");
  ASSERT_TRUE(del.ok());
  EXPECT_FALSE(*del);
}

}  // namespace
}  // namespace ds::client
