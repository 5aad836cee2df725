#include "kvraft/session_table.h"

#include <string>

#include "gtest/gtest.h"

namespace ds::kv {
namespace {

using Verdict = SessionTable::Verdict;

TEST(SessionTable, UnknownClientIsNewOnlyAtSequenceOne) {
  SessionTable table;
  EXPECT_EQ(table.Check(7, 1), Verdict::kNew);
  // A higher number from an unknown client means its session was forgotten:
  // applying it could apply a command twice.
  EXPECT_EQ(table.Check(7, 2), Verdict::kExpired);
}

TEST(SessionTable, LatestCommandIsADuplicateWithItsCachedResult) {
  SessionTable table;
  table.Record(7, 1, "first", 100);
  table.Record(7, 2, "second", 200);
  std::string cached;
  EXPECT_EQ(table.Check(7, 2, &cached), Verdict::kDuplicate);
  EXPECT_EQ(cached, "second");
  EXPECT_EQ(table.Check(7, 1), Verdict::kStale);
  EXPECT_EQ(table.Check(7, 3), Verdict::kNew);
  // Sessions are independent.
  EXPECT_EQ(table.Check(8, 1), Verdict::kNew);
}

TEST(SessionTable, ExpiresSessionsIdleLongerThanTheTtl) {
  SessionTable table({.session_ttl = absl::Microseconds(1000)});
  table.Record(1, 1, "", 0);
  table.Record(2, 1, "", 500);
  EXPECT_EQ(table.ExpireIdle(1000), 0);  // idle exactly the TTL: kept
  EXPECT_EQ(table.ExpireIdle(1001), 1);
  EXPECT_EQ(table.size(), 1);
  EXPECT_EQ(table.Check(1, 2), Verdict::kExpired);
  // Activity moves the session back to the end of the expiry queue.
  table.Record(2, 2, "", 1400);
  EXPECT_EQ(table.ExpireIdle(2000), 0);
  EXPECT_EQ(table.ExpireIdle(2401), 1);
  EXPECT_EQ(table.size(), 0);
}

TEST(SessionTable, InfiniteTtlNeverExpires) {
  SessionTable table({.session_ttl = absl::InfiniteDuration()});
  table.Record(1, 1, "", 0);
  EXPECT_EQ(table.ExpireIdle(std::numeric_limits<int64_t>::max()), 0);
  EXPECT_EQ(table.size(), 1);
}

TEST(SessionTable, MaxSessionsEvictsTheLeastRecentlyActive) {
  SessionTable table({.max_sessions = 2});
  table.Record(1, 1, "", 10);
  table.Record(2, 1, "", 20);
  table.Record(1, 2, "", 30);  // client 1 is now the most recent
  table.Record(3, 1, "", 40);
  EXPECT_EQ(table.size(), 2);
  EXPECT_EQ(table.Check(2, 2), Verdict::kExpired);
  EXPECT_EQ(table.Check(1, 2), Verdict::kDuplicate);
  EXPECT_EQ(table.Check(3, 1), Verdict::kDuplicate);
}

TEST(SessionTable, SaveAndLoadRoundTripsWithStableBytes) {
  SessionTable table({.session_ttl = absl::Microseconds(100)});
  table.Record(9, 3, "nine", 50);
  table.Record(4, 1, "four", 60);
  pb::SessionTableState state;
  table.SaveTo(&state);
  ASSERT_EQ(state.sessions_size(), 2);
  EXPECT_EQ(state.sessions(0).client_id(), 4u);  // sorted by client id

  SessionTable restored({.session_ttl = absl::Microseconds(100)});
  ASSERT_TRUE(restored.LoadFrom(state).ok());
  std::string cached;
  EXPECT_EQ(restored.Check(9, 3, &cached), Verdict::kDuplicate);
  EXPECT_EQ(cached, "nine");
  pb::SessionTableState again;
  restored.SaveTo(&again);
  EXPECT_EQ(again.SerializeAsString(), state.SerializeAsString());
  // The expiry order survives the round trip.
  EXPECT_EQ(restored.ExpireIdle(151), 1);
  EXPECT_EQ(restored.Check(9, 4), Verdict::kExpired);
}

TEST(SessionTable, LoadRejectsDuplicateClients) {
  pb::SessionTableState state;
  for (int i = 0; i < 2; ++i) {
    pb::ClientSession* session = state.add_sessions();
    session->set_client_id(5);
    session->set_last_sequence(1);
  }
  SessionTable table;
  table.Record(1, 1, "", 0);
  EXPECT_EQ(table.LoadFrom(state).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table.size(), 0);
}

}  // namespace
}  // namespace ds::kv
