#include "raft/rsm/session_table.h"

#include <cstdint>
#include <limits>
#include <string>

#include "gtest/gtest.h"

namespace ds::rsm {
namespace {

using Verdict = SessionTable::Verdict;

// A session reference as a client sends it.
pb::SessionRef Ref(uint64_t client_id, int64_t created_unix_micros, uint64_t sequence = 1) {
  pb::SessionRef ref;
  ref.set_client_id(client_id);
  ref.set_created_unix_micros(created_unix_micros);
  ref.set_sequence(sequence);
  return ref;
}

TEST(SessionTable, UnknownSessionCreatedAfterTheWatermarkIsOpenWhateverItsSequence) {
  SessionTable table;
  EXPECT_EQ(table.watermark_unix_micros(), 0);
  // Nothing was ever forgotten, so no unknown session can be a forgotten one.
  EXPECT_EQ(table.Check(Ref(7, 100, 1)), Verdict::kOpen);
  EXPECT_EQ(table.Check(Ref(7, 100, 5)), Verdict::kOpen);
  EXPECT_EQ(table.size(), 0) << "Check changed the table";
}

TEST(SessionTable, OpenedSessionHasAppliedNothingYet) {
  SessionTable table;
  table.Open(Ref(7, 100), 1000);
  EXPECT_EQ(table.size(), 1);
  EXPECT_EQ(table.Check(Ref(7, 100, 1)), Verdict::kNew);
  EXPECT_EQ(table.Check(Ref(8, 100, 1)), Verdict::kOpen);  // sessions are per client id
}

TEST(SessionTable, OpenOfAKnownSessionLeavesItAsItIs) {
  SessionTable table;
  table.Open(Ref(7, 100), 1000);
  table.Record(7, 1, "one", 1000);
  table.Open(Ref(7, 100), 2000);
  EXPECT_EQ(table.size(), 1);
  std::string cached;
  EXPECT_EQ(table.Check(Ref(7, 100, 1), &cached), Verdict::kDuplicate);
  EXPECT_EQ(cached, "one");
}

TEST(SessionTable, RecordNeverOpensASession) {
  SessionTable table;
  table.Record(7, 1, "", 0);
  EXPECT_EQ(table.size(), 0);
  EXPECT_EQ(table.Check(Ref(7, 100, 1)), Verdict::kOpen);
}

TEST(SessionTable, LatestCommandIsADuplicateWithItsCachedResult) {
  SessionTable table;
  table.Open(Ref(7, 100), 0);
  table.Record(7, 1, "first", 100);
  table.Record(7, 2, "second", 200);
  std::string cached;
  EXPECT_EQ(table.Check(Ref(7, 100, 2), &cached), Verdict::kDuplicate);
  EXPECT_EQ(cached, "second");
  EXPECT_EQ(table.Check(Ref(7, 100, 1)), Verdict::kStale);
  EXPECT_EQ(table.Check(Ref(7, 100, 3)), Verdict::kNew);
}

TEST(SessionTable, RecordingAnOlderSequenceKeepsTheLatestResult) {
  SessionTable table;
  table.Open(Ref(7, 100), 0);
  table.Record(7, 2, "second", 200);
  table.Record(7, 1, "first", 300);  // e.g. a session merged in from elsewhere
  std::string cached;
  EXPECT_EQ(table.Check(Ref(7, 100, 2), &cached), Verdict::kDuplicate);
  EXPECT_EQ(cached, "second");
  EXPECT_EQ(table.Check(Ref(7, 100, 1)), Verdict::kStale);
}

TEST(SessionTable, SameIdWithAnotherCreationTimeIsExpired) {
  SessionTable table;
  table.Open(Ref(7, 100), 0);
  table.Record(7, 1, "one", 10);
  // Another session that drew the same id, older or newer: never mixed with it.
  EXPECT_EQ(table.Check(Ref(7, 200, 1)), Verdict::kExpired);
  EXPECT_EQ(table.Check(Ref(7, 50, 2)), Verdict::kExpired);
  EXPECT_EQ(table.Check(Ref(7, 100, 2)), Verdict::kNew);
}

TEST(SessionTable, ExpiresSessionsIdleLongerThanTheTtl) {
  SessionTable table({.session_ttl = absl::Microseconds(1000)});
  table.Open(Ref(1, 10), 0);
  table.Open(Ref(2, 20), 500);
  EXPECT_EQ(table.ExpireIdle(1000), 0);  // idle exactly the TTL: kept
  EXPECT_EQ(table.ExpireIdle(1001), 1);
  EXPECT_EQ(table.size(), 1);
  EXPECT_EQ(table.Check(Ref(1, 10, 1)), Verdict::kExpired);
  // Activity moves a session back to the end of the expiry queue.
  table.Record(2, 1, "", 1400);
  EXPECT_EQ(table.ExpireIdle(2000), 0);
  EXPECT_EQ(table.ExpireIdle(2401), 1);
  EXPECT_EQ(table.size(), 0);
}

TEST(SessionTable, ExpiryRaisesTheWatermarkToTheNewestForgottenCreationTime) {
  SessionTable table({.session_ttl = absl::Microseconds(1000)});
  table.Open(Ref(1, 300), 0);    // created later, idle first
  table.Open(Ref(2, 100), 500);  // created earlier, idle later
  ASSERT_EQ(table.ExpireIdle(1001), 1);
  EXPECT_EQ(table.watermark_unix_micros(), 300);
  // The watermark never goes down: forgetting the older session keeps it.
  ASSERT_EQ(table.ExpireIdle(1501), 1);
  EXPECT_EQ(table.watermark_unix_micros(), 300);
}

TEST(SessionTable, UnknownSessionAtOrBelowTheWatermarkIsExpiredEvenAtSequenceOne) {
  SessionTable table({.session_ttl = absl::Microseconds(1000)});
  table.Open(Ref(1, 300), 0);
  ASSERT_EQ(table.ExpireIdle(1001), 1);
  ASSERT_EQ(table.watermark_unix_micros(), 300);
  // Ids the table never saw: sequence 1 of a forgotten session looks the same.
  EXPECT_EQ(table.Check(Ref(9, 300, 1)), Verdict::kExpired);
  EXPECT_EQ(table.Check(Ref(9, 299, 1)), Verdict::kExpired);
  EXPECT_EQ(table.Check(Ref(9, 301, 1)), Verdict::kOpen);
}

TEST(SessionTable, FirstCommandRetriedAfterExpiryIsRefused) {
  SessionTable table({.session_ttl = absl::Microseconds(1000)});
  table.Open(Ref(1, 5), 0);
  ASSERT_EQ(table.Check(Ref(1, 5, 1)), Verdict::kNew);
  table.Record(1, 1, "", 10);
  EXPECT_EQ(table.ExpireIdle(1011), 1);
  EXPECT_EQ(table.Check(Ref(1, 5, 1)), Verdict::kExpired);
}

TEST(SessionTable, InfiniteTtlNeverExpires) {
  SessionTable table({.session_ttl = absl::InfiniteDuration()});
  table.Open(Ref(1, 5), 0);
  EXPECT_EQ(table.ExpireIdle(std::numeric_limits<int64_t>::max()), 0);
  EXPECT_EQ(table.size(), 1);
  EXPECT_EQ(table.watermark_unix_micros(), 0);
}

TEST(SessionTable, MaxSessionsEvictsTheLeastRecentlyActive) {
  SessionTable table({.max_sessions = 2});
  table.Open(Ref(1, 100), 10);
  table.Open(Ref(2, 200), 20);
  table.Record(1, 1, "", 30);  // client 1 is now the most recent
  table.Open(Ref(3, 300), 40);
  EXPECT_EQ(table.size(), 2);
  EXPECT_EQ(table.Check(Ref(2, 200, 1)), Verdict::kExpired);
  EXPECT_EQ(table.Check(Ref(1, 100, 1)), Verdict::kDuplicate);
  EXPECT_EQ(table.Check(Ref(3, 300, 1)), Verdict::kNew);
}

TEST(SessionTable, EvictionRaisesTheWatermarkToTheEvictedCreationTime) {
  SessionTable table({.max_sessions = 1});
  table.Open(Ref(1, 100), 10);
  table.Record(1, 1, "", 20);
  table.Open(Ref(2, 200), 30);  // evicts client 1
  EXPECT_EQ(table.size(), 1);
  EXPECT_EQ(table.watermark_unix_micros(), 100);
  // Its first command's retry is refused rather than applied again.
  EXPECT_EQ(table.Check(Ref(1, 100, 1)), Verdict::kExpired);
  EXPECT_EQ(table.Check(Ref(3, 101, 1)), Verdict::kOpen);
}

TEST(SessionTable, ZeroMaxSessionsIsUnbounded) {
  SessionTable table({.max_sessions = 0});
  for (uint64_t id = 1; id <= 1000; ++id) table.Open(Ref(id, 10), static_cast<int64_t>(id));
  EXPECT_EQ(table.size(), 1000);
  EXPECT_EQ(table.watermark_unix_micros(), 0);
}

TEST(SessionTable, SaveAndLoadRoundTripsSessionsAndWatermarkWithStableBytes) {
  const SessionOptions options{.session_ttl = absl::Microseconds(100)};
  SessionTable table(options);
  table.Open(Ref(1, 35), 0);
  table.Open(Ref(9, 40), 40);
  table.Record(9, 3, "nine", 50);
  ASSERT_EQ(table.ExpireIdle(101), 1);  // forgets client 1: watermark 35
  table.Open(Ref(4, 45), 55);
  table.Record(4, 1, "four", 60);
  table.Open(Ref(6, 70), 70);  // opened, nothing applied yet
  pb::SessionTableState state;
  table.SaveTo(&state);
  ASSERT_EQ(state.sessions_size(), 3);
  EXPECT_EQ(state.sessions(0).client_id(), 4u);  // sorted by client id
  EXPECT_EQ(state.watermark_unix_micros(), 35);

  SessionTable restored(options);
  ASSERT_TRUE(restored.LoadFrom(state).ok());
  EXPECT_EQ(restored.size(), 3);
  EXPECT_EQ(restored.watermark_unix_micros(), 35);
  std::string cached;
  EXPECT_EQ(restored.Check(Ref(9, 40, 3), &cached), Verdict::kDuplicate);
  EXPECT_EQ(cached, "nine");
  EXPECT_EQ(restored.Check(Ref(6, 70, 1)), Verdict::kNew);
  EXPECT_EQ(restored.Check(Ref(1, 35, 1)), Verdict::kExpired);
  EXPECT_EQ(restored.Check(Ref(2, 36, 1)), Verdict::kOpen);
  pb::SessionTableState again;
  restored.SaveTo(&again);
  EXPECT_EQ(again.SerializeAsString(), state.SerializeAsString());
  // The expiry order survives the round trip: client 9 (last active 50) goes first.
  EXPECT_EQ(restored.ExpireIdle(151), 1);
  EXPECT_EQ(restored.Check(Ref(9, 40, 4)), Verdict::kExpired);
  EXPECT_EQ(restored.watermark_unix_micros(), 40);
}

TEST(SessionTable, LoadReplacesSessionsAndWatermark) {
  SessionTable table({.max_sessions = 1});
  table.Open(Ref(1, 100), 10);
  table.Open(Ref(2, 200), 20);  // watermark 100
  ASSERT_EQ(table.watermark_unix_micros(), 100);
  pb::SessionTableState state;
  pb::ClientSession* s = state.add_sessions();
  s->set_client_id(5);
  s->set_created_unix_micros(50);
  state.set_watermark_unix_micros(20);
  ASSERT_TRUE(table.LoadFrom(state).ok());
  EXPECT_EQ(table.size(), 1);
  EXPECT_EQ(table.watermark_unix_micros(), 20);
  EXPECT_EQ(table.Check(Ref(2, 200, 2)), Verdict::kOpen);  // gone, and above the new watermark
  EXPECT_EQ(table.Check(Ref(5, 50, 1)), Verdict::kNew);
}

TEST(SessionTable, LoadRejectsDuplicateClientsAndLeavesTheTableEmpty) {
  pb::SessionTableState state;
  for (int i = 0; i < 2; ++i) {
    pb::ClientSession* session = state.add_sessions();
    session->set_client_id(5);
    session->set_created_unix_micros(10);
    session->set_last_sequence(1);
  }
  state.set_watermark_unix_micros(7);
  SessionTable table;
  table.Open(Ref(1, 100), 0);
  EXPECT_EQ(table.LoadFrom(state).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table.size(), 0);
  EXPECT_EQ(table.watermark_unix_micros(), 0);
}

TEST(SessionTable, LoadRejectsClientIdZero) {
  pb::SessionTableState state;
  state.add_sessions()->set_client_id(3);
  state.add_sessions()->set_client_id(0);
  SessionTable table;
  EXPECT_EQ(table.LoadFrom(state).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table.size(), 0);
}

}  // namespace
}  // namespace ds::rsm
