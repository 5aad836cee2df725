// The blocking Clerk (client/clerk.h) against the fake cluster: finding and
// following the leader, retries, exactly-once, and client sessions (opened by
// the first write, renewed when the servers forgot them, resumed).
#include "client/clerk.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/client/fake_kv_service.h"
#include "tests/client/unreachable_endpoint.h"

namespace ds::client {
namespace {

using testing::ClosedEndpoint;
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

int TotalStatusCalls(const FakeKvCluster& cluster) {
  int n = 0;
  for (int i = 0; i < cluster.size(); ++i) n += cluster.status_calls(i);
  return n;
}

// A leader search asks every replica at once and goes on with the first
// answer that names a leader: the other probes may still be on their way
// when the operation returns. Waits (up to 5 s) until the count reaches
// `expected`; returns the count then.
int SettledStatusCalls(const FakeKvCluster& cluster, int expected) {
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (TotalStatusCalls(cluster) < expected && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  return TotalStatusCalls(cluster);
}

int TotalKvCalls(const FakeKvCluster& cluster) {
  int n = 0;
  for (int i = 0; i < cluster.size(); ++i) n += cluster.kv_calls(i);
  return n;
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

// The fake itself: Register is served by the contract of proto/rsm.proto
// (the clerks never call it, other clients may).
TEST(FakeKvCluster, RegisterOpensASessionAtTheLeaderAndFollowersRefuseWithAHint) {
  FakeKvCluster cluster(2);
  cluster.set_leader(1);
  rsm::pb::RegisterRequest req;
  req.mutable_session()->set_client_id(42);
  req.mutable_session()->set_created_unix_micros(absl::ToUnixMicros(absl::Now()));
  auto call = [&](int replica, rsm::pb::ReplyStatus* reply) {
    auto stub = rsm::pb::Replica::NewStub(MakeChannel(cluster.endpoints()[replica]));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    rsm::pb::RegisterResponse resp;
    *reply = ToReplyStatus(stub->Register(&ctx, req, &resp), ctx);
  };
  rsm::pb::ReplyStatus follower;
  call(0, &follower);
  EXPECT_EQ(follower.code(), grpc::StatusCode::UNAVAILABLE) << follower.message();
  EXPECT_TRUE(follower.not_applied());
  EXPECT_EQ(follower.leader_id(), 2u);
  EXPECT_EQ(follower.leader_address(), cluster.endpoints()[1]);
  rsm::pb::ReplyStatus leader;
  call(1, &leader);
  EXPECT_EQ(leader.code(), grpc::StatusCode::OK) << leader.message();
  EXPECT_EQ(cluster.open_sessions(), 1);
  EXPECT_EQ(cluster.log_entries(), 1u);
}

TEST(Clerk, CreateRejectsNoEndpoints) {
  EXPECT_EQ(Clerk::Create({}).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- Finding and following the leader ----

TEST(Clerk, FindsTheLeaderByAskingEveryReplicaOnceAndCachesIt) {
  FakeKvCluster cluster(3);
  cluster.set_leader(2);
  auto clerk = MakeClerk(cluster);
  ASSERT_TRUE(clerk->Put("k", "v1").ok());
  ASSERT_EQ(SettledStatusCalls(cluster, 3), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(cluster.status_calls(i), 1) << "replica " << i;
  EXPECT_EQ(cluster.kv_calls(0), 0) << "the put went to a follower";
  EXPECT_EQ(cluster.kv_calls(1), 0) << "the put went to a follower";
  ASSERT_TRUE(clerk->Append("k", "+v2").ok());
  auto got = clerk->Get("k");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->found);
  EXPECT_EQ(got->value, "v1+v2");
  EXPECT_EQ(cluster.kv_calls(2), 3);  // Put, Append, Get
  EXPECT_EQ(TotalStatusCalls(cluster), 3) << "the leader was not cached";
}

TEST(Clerk, FollowsTheHintOfAReplicaThatNoLongerLeads) {
  FakeKvCluster cluster(3);
  cluster.set_leader(0);
  auto clerk = MakeClerk(cluster);
  ASSERT_TRUE(clerk->Put("k", "1").ok());
  const int probes = SettledStatusCalls(cluster, 3);
  cluster.set_leader(1);
  ASSERT_TRUE(clerk->Put("k", "2").ok());
  EXPECT_EQ(cluster.kv_calls(0), 2);  // the first Put, then the refusal naming replica 1
  EXPECT_EQ(cluster.kv_calls(1), 1);
  EXPECT_EQ(cluster.kv_calls(2), 0);
  EXPECT_EQ(TotalStatusCalls(cluster), probes) << "asked everyone despite the hint";
  EXPECT_EQ(cluster.value("k"), "2");
}

TEST(Clerk, FollowsAHintByReplicaIdWhenItsAddressIsSpelledDifferently) {
  FakeKvCluster cluster(3);
  // "ipv4:127.0.0.1:P" (a gRPC target, resolved without DNS) here,
  // "127.0.0.1:P" in the hints: a hint is matched by the replica id that a
  // probe answer taught the clerk (each leader found below answered a probe
  // itself).
  std::vector<std::string> endpoints;
  for (const std::string& e : cluster.endpoints()) endpoints.push_back("ipv4:" + e);
  auto clerk = Clerk::Create({.endpoints = endpoints});
  ASSERT_TRUE(clerk.ok()) << clerk.status();
  cluster.set_leader(2);
  ASSERT_TRUE((*clerk)->Put("k", "1").ok());
  cluster.set_send_hints(false);
  cluster.set_leader(0);
  ASSERT_TRUE((*clerk)->Put("k", "2").ok());  // found by a second probe round
  const int probes = SettledStatusCalls(cluster, 6);
  ASSERT_EQ(probes, 6);
  cluster.set_send_hints(true);
  cluster.set_leader(2);
  ASSERT_TRUE((*clerk)->Put("k", "3").ok());
  EXPECT_EQ(TotalStatusCalls(cluster), probes) << "asked everyone despite the hint";
  EXPECT_EQ(cluster.kv_calls(2), 3);  // puts 1 and 3, and the refusal of put 2
  EXPECT_EQ(cluster.value("k"), "3");
}

TEST(Clerk, WithoutHintsAsksEveryReplicaAgainWhenTheLeaderMoves) {
  FakeKvCluster cluster(3);
  cluster.set_send_hints(false);
  cluster.set_leader(1);
  auto clerk = MakeClerk(cluster);
  ASSERT_TRUE(clerk->Put("a", "1").ok());
  EXPECT_EQ(cluster.value("a"), "1");
  const int probes = SettledStatusCalls(cluster, 3);
  cluster.set_leader(0);  // the cached replica now refuses, naming nobody
  ASSERT_TRUE(clerk->Put("a", "2").ok());
  EXPECT_EQ(cluster.value("a"), "2");
  EXPECT_EQ(SettledStatusCalls(cluster, probes + 3), probes + 3) << "not one probe round";
  EXPECT_EQ(cluster.kv_calls(2), 0);
}

TEST(Clerk, SlowReplicaDoesNotDelayTheLeaderSearch) {
  FakeKvCluster cluster(3);
  cluster.set_leader(2);
  cluster.set_slow(0, 1, absl::Seconds(2));  // its Status answers 2 s late
  auto clerk = MakeClerk(cluster, absl::Seconds(10), absl::Seconds(3));
  const absl::Time start = absl::Now();
  ASSERT_TRUE(clerk->Put("k", "v").ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(1)) << "waited for the slow replica's answer";
  EXPECT_EQ(cluster.value("k"), "v");
}

TEST(Clerk, AttemptThatTimesOutIsRetriedAndAppliedOnce) {
  FakeKvCluster cluster(2);
  cluster.set_leader(1);
  auto clerk = MakeClerk(cluster, absl::Seconds(10), absl::Milliseconds(300));
  ASSERT_TRUE(clerk->Put("k", "a").ok());
  cluster.set_slow(1, 1, absl::Seconds(1));  // the leader's next answer comes late
  const absl::Time start = absl::Now();
  ASSERT_TRUE(clerk->Append("k", "b").ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(1)) << "waited for the slow attempt";
  ASSERT_TRUE(cluster.WaitForDelayedCalls(absl::Seconds(10)));  // the late attempt: a duplicate
  EXPECT_EQ(cluster.value("k"), "ab");
  EXPECT_EQ(cluster.applied_writes(), 2);
}

TEST(Clerk, RetryAfterLostReplyAppliesOnce) {
  FakeKvCluster cluster(3);
  cluster.set_leader(0);
  auto clerk = MakeClerk(cluster);
  ASSERT_TRUE(clerk->Put("x", "").ok());
  cluster.LoseReplies(2);  // applied, but the clerk hears "unavailable" twice
  ASSERT_TRUE(clerk->Append("x", "a").ok());
  ASSERT_TRUE(clerk->Append("x", "b").ok());
  EXPECT_EQ(cluster.value("x"), "ab");
  EXPECT_EQ(cluster.applied_writes(), 3);
}

TEST(Clerk, GivesUpWithDeadlineExceededWhenNoLeader) {
  FakeKvCluster cluster(3);
  cluster.set_leader(-1);
  auto clerk = MakeClerk(cluster, absl::Milliseconds(700), absl::Milliseconds(200));
  const absl::Time start = absl::Now();
  absl::Status st = clerk->Put("k", "v");
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  // "no replica knows a leader", or "no leader found" and why when the last
  // probe round ran into the deadline.
  EXPECT_NE(st.message().find("put: no answer within"), absl::string_view::npos) << st;
  EXPECT_NE(st.message().find("leader"), absl::string_view::npos) << st;
  EXPECT_GE(took, absl::Milliseconds(650));
  EXPECT_LT(took, absl::Seconds(3));
  EXPECT_EQ(cluster.applied_writes(), 0);
  EXPECT_EQ(cluster.log_entries(), 0u);
}

TEST(Clerk, InvalidArgumentIsNotRetried) {
  FakeKvCluster cluster(3);
  cluster.set_leader(0);
  auto clerk = MakeClerk(cluster);
  absl::Status st = clerk->Put("", "v");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_EQ(TotalKvCalls(cluster), 1);
}

TEST(Clerk, UnreachableReplicasTimeOut) {
  auto closed = ClosedEndpoint::Create();
  ASSERT_TRUE(closed.ok()) << closed.status();
  auto clerk = Clerk::Create({.endpoints = {closed->address()},
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

// ---- Sessions ----

TEST(ClerkSession, FirstWriteOpensTheSessionInOneLogEntryAndReadsNeedNone) {
  FakeKvCluster cluster(3);
  cluster.set_leader(1);
  auto clerk = MakeClerk(cluster);
  const SessionState before = clerk->session();
  EXPECT_NE(before.client_id, 0u) << "the clerk picks its session id itself";
  EXPECT_EQ(before.last_sequence, 0u);
  ASSERT_TRUE(clerk->Get("k").ok());
  EXPECT_EQ(cluster.open_sessions(), 0);
  EXPECT_EQ(cluster.log_entries(), 0u) << "a read went through the log";
  ASSERT_TRUE(clerk->Put("k", "1").ok());
  EXPECT_EQ(cluster.open_sessions(), 1);
  EXPECT_EQ(cluster.log_entries(), 1u) << "opening the session cost a separate entry";
  for (int i = 0; i < 3; ++i) EXPECT_EQ(cluster.register_calls(i), 0) << "replica " << i;
  ASSERT_TRUE(clerk->Append("k", "2").ok());
  ASSERT_TRUE(clerk->Delete("k").ok());
  EXPECT_EQ(cluster.open_sessions(), 1);
  EXPECT_EQ(cluster.sessions_used(), 1);
  const SessionState after = clerk->session();
  EXPECT_EQ(after.client_id, before.client_id);
  EXPECT_EQ(after.created_unix_micros, before.created_unix_micros);
  EXPECT_EQ(after.last_sequence, 3u);
  EXPECT_EQ(cluster.applied_writes(), 3);
  EXPECT_EQ(cluster.log_entries(), 3u);
}

TEST(ClerkSession, SequenceNumberOfAWriteThatTimedOutIsNotReused) {
  FakeKvCluster cluster(1);
  auto clerk = MakeClerk(cluster, absl::Milliseconds(500), absl::Milliseconds(200));
  ASSERT_TRUE(clerk->Put("k", "a").ok());
  cluster.set_leader(-1);
  EXPECT_EQ(clerk->Append("k", "b").code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(clerk->session().last_sequence, 2u);  // spent: it may still apply later
  cluster.set_leader(0);
  ASSERT_TRUE(clerk->Append("k", "c").ok());
  EXPECT_EQ(clerk->session().last_sequence, 3u);
  EXPECT_EQ(cluster.value("k"), "ac");
}

TEST(ClerkSession, ExpiredSessionIsRenewedAndTheWriteResentWhenItWasCleanlyRefused) {
  FakeKvCluster cluster(3);
  cluster.set_leader(0);
  auto clerk = MakeClerk(cluster);
  ASSERT_TRUE(clerk->Append("k", "a").ok());
  const SessionState old_session = clerk->session();
  cluster.ExpireSessions();
  // The one attempt is refused ABORTED before anything is applied: sending
  // the write again under a new session cannot apply it twice.
  ASSERT_TRUE(clerk->Append("k", "b").ok());
  EXPECT_EQ(cluster.value("k"), "ab");
  EXPECT_EQ(cluster.applied_writes(), 2);
  const SessionState renewed = clerk->session();
  EXPECT_NE(renewed.client_id, old_session.client_id);
  EXPECT_GT(renewed.created_unix_micros, cluster.session_watermark_unix_micros());
  EXPECT_EQ(renewed.last_sequence, 1u);
  EXPECT_EQ(cluster.sessions_used(), 2);
}

TEST(ClerkSession, NotLeaderRefusalsDoNotMakeAnExpiredWriteAmbiguous) {
  FakeKvCluster cluster(3);
  cluster.set_leader(0);
  auto clerk = MakeClerk(cluster);
  ASSERT_TRUE(clerk->Append("k", "a").ok());
  cluster.ExpireSessions();
  cluster.set_leader(2);
  // Replica 0 refuses (not the leader, nothing proposed) and names replica 2,
  // which refuses the session: every attempt was refused before proposing.
  ASSERT_TRUE(clerk->Append("k", "b").ok());
  EXPECT_EQ(cluster.kv_calls(0), 2);
  EXPECT_EQ(cluster.kv_calls(2), 2);  // ABORTED, then the resent write
  EXPECT_EQ(cluster.value("k"), "ab");
  EXPECT_EQ(cluster.applied_writes(), 2);
}

TEST(ClerkSession, ExpiredSessionAfterAnAmbiguousAttemptFailsAbortedWithoutResending) {
  FakeKvCluster cluster(3);
  cluster.set_leader(0);
  auto clerk = MakeClerk(cluster);
  ASSERT_TRUE(clerk->Append("k", "a").ok());
  const SessionState old_session = clerk->session();
  // The append is applied but its reply is lost, and the session is
  // forgotten before the retry: resending under a new session would apply
  // it twice, so the clerk must report the outcome as unknown.
  cluster.LoseReplies(1, /*then_expire_sessions=*/true);
  absl::Status st = clerk->Append("k", "b");
  EXPECT_EQ(st.code(), absl::StatusCode::kAborted) << st;
  EXPECT_EQ(cluster.value("k"), "ab") << "applied twice or not at all";
  EXPECT_EQ(cluster.applied_writes(), 2);
  // The clerk's next write uses a new session.
  EXPECT_NE(clerk->session().client_id, old_session.client_id);
  ASSERT_TRUE(clerk->Append("k", "c").ok());
  EXPECT_EQ(cluster.value("k"), "abc");
}

TEST(ClerkSession, ExpiredSessionAfterATimedOutAttemptFailsAborted) {
  FakeKvCluster cluster(2);
  cluster.set_leader(0);
  auto clerk = MakeClerk(cluster, absl::Seconds(10), absl::Milliseconds(300));
  ASSERT_TRUE(clerk->Append("k", "a").ok());
  cluster.ExpireSessions();
  // The first attempt times out (for all the clerk knows it was applied);
  // the retry finds the session gone.
  cluster.set_slow(0, 1, absl::Seconds(1));
  absl::Status st = clerk->Append("k", "b");
  EXPECT_EQ(st.code(), absl::StatusCode::kAborted) << st;
  ASSERT_TRUE(cluster.WaitForDelayedCalls(absl::Seconds(10)));  // the slow attempt: refused too
  EXPECT_EQ(cluster.value("k"), "a");
  EXPECT_EQ(cluster.applied_writes(), 1);
}

TEST(ClerkSession, NewClerkWhoseClockIsBehindTheWatermarkStartsANewSession) {
  FakeKvCluster cluster(1);
  auto behind = MakeClerk(cluster);  // its session is created first...
  absl::SleepFor(absl::Milliseconds(2));
  auto other = MakeClerk(cluster);
  ASSERT_TRUE(other->Put("k", "x").ok());
  cluster.ExpireSessions();  // ... so it is at or below the watermark
  ASSERT_LE(behind->session().created_unix_micros, cluster.session_watermark_unix_micros());
  const uint64_t first_id = behind->session().client_id;
  ASSERT_TRUE(behind->Put("k", "y").ok());
  EXPECT_NE(behind->session().client_id, first_id);
  EXPECT_GT(behind->session().created_unix_micros, cluster.session_watermark_unix_micros());
  EXPECT_EQ(cluster.value("k"), "y");
}

TEST(ClerkSession, ResumedSessionContinuesItsSequence) {
  FakeKvCluster cluster(1);
  auto first = MakeClerk(cluster);
  ASSERT_TRUE(first->Append("k", "a").ok());
  ASSERT_TRUE(first->Append("k", "b").ok());
  auto resumed = Clerk::Create({.endpoints = cluster.endpoints(), .session = first->session()});
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_TRUE((*resumed)->Append("k", "c").ok());
  EXPECT_EQ(cluster.sessions_used(), 1);
  EXPECT_EQ((*resumed)->session().client_id, first->session().client_id);
  EXPECT_EQ((*resumed)->session().last_sequence, 3u);
  EXPECT_EQ(cluster.value("k"), "abc");
}

TEST(ClerkSession, ResumedWithTheLastSequenceItsNextWriteIsAnsweredFromTheCache) {
  FakeKvCluster cluster(1);
  auto first = MakeClerk(cluster);
  ASSERT_TRUE(first->Append("k", "a").ok());
  ASSERT_TRUE(first->Append("k", "b").ok());
  SessionState stale = first->session();
  stale.last_sequence = 1;  // its next write reuses number 2
  auto resumed = Clerk::Create({.endpoints = cluster.endpoints(), .session = stale});
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_TRUE((*resumed)->Append("k", "c").ok());
  EXPECT_EQ(cluster.value("k"), "ab") << "a reused sequence number was applied";
  EXPECT_EQ(cluster.applied_writes(), 2);
}

TEST(ClerkSession, ResumedBehindTheLastSequenceIsRefusedAlreadyExists) {
  FakeKvCluster cluster(1);
  auto first = MakeClerk(cluster);
  ASSERT_TRUE(first->Append("k", "a").ok());
  ASSERT_TRUE(first->Append("k", "b").ok());
  SessionState stale = first->session();
  stale.last_sequence = 0;  // its next write is number 1, older than the latest
  auto resumed = Clerk::Create({.endpoints = cluster.endpoints(), .session = stale});
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ((*resumed)->Append("k", "c").code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(cluster.value("k"), "ab");
}

TEST(ClerkSession, ResumingAForgottenSessionStartsANewOne) {
  FakeKvCluster cluster(1);
  auto first = MakeClerk(cluster);
  ASSERT_TRUE(first->Append("k", "a").ok());
  const SessionState saved = first->session();
  cluster.ExpireSessions();
  auto resumed = Clerk::Create({.endpoints = cluster.endpoints(), .session = saved});
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  // Refused ABORTED before anything was applied: resent under a new session.
  ASSERT_TRUE((*resumed)->Append("k", "b").ok());
  EXPECT_NE((*resumed)->session().client_id, saved.client_id);
  EXPECT_EQ(cluster.value("k"), "ab");
}

// A blocking clerk's one-operation-at-a-time gate: turns never overlap, and
// no mutex is held while a turn runs (the turn itself can lock and wait).
TEST(OneOperationAtATime, TurnsNeverOverlap) {
  OneOperationAtATime gate;
  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  std::atomic<int> turns{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int k = 0; k < 200; ++k) {
        OneOperationAtATime::Turn turn(gate);
        const int now = inside.fetch_add(1) + 1;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        if (k % 50 == 0) absl::SleepFor(absl::Microseconds(200));
        inside.fetch_sub(1);
        turns.fetch_add(1);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(most.load(), 1);
  EXPECT_EQ(turns.load(), 800);
}

}  // namespace
}  // namespace ds::client
