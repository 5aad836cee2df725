#include "kvraft/session_table.h"

#include <cstdint>
#include <limits>
#include <string>

#include "gtest/gtest.h"

namespace ds::kv {
namespace {

using Verdict = SessionTable::Verdict;

// Opens a session for `client_id` at `now`, asserting it worked.
void Register(SessionTable& table, uint64_t client_id, int64_t now = 0) {
  ASSERT_TRUE(table.Register(client_id, now).ok());
}

TEST(SessionTable, UnknownClientIsRefusedEvenAtSequenceOne) {
  SessionTable table;
  // Sequence 1 of a client without a session may be the retry of a first
  // command applied under a session that was since forgotten.
  EXPECT_EQ(table.Check(7, 1), Verdict::kExpired);
  EXPECT_EQ(table.Check(7, 2), Verdict::kExpired);
}

TEST(SessionTable, RegisteredClientStartsAtSequenceOne) {
  SessionTable table;
  Register(table, 7);
  EXPECT_EQ(table.size(), 1);
  EXPECT_EQ(table.Check(7, 1), Verdict::kNew);
  EXPECT_EQ(table.Check(8, 1), Verdict::kExpired);  // sessions are per client
}

TEST(SessionTable, RegisterRefusesZeroAndTakenIds) {
  SessionTable table;
  Register(table, 7);
  table.Record(7, 1, "one", 10);
  EXPECT_EQ(table.Register(0, 20).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table.Register(7, 20).code(), absl::StatusCode::kAlreadyExists);
  // The existing session is untouched.
  std::string cached;
  EXPECT_EQ(table.Check(7, 1, &cached), Verdict::kDuplicate);
  EXPECT_EQ(cached, "one");
  EXPECT_EQ(table.size(), 1);
}

TEST(SessionTable, RecordNeverOpensASession) {
  SessionTable table;
  table.Record(7, 1, "", 0);
  EXPECT_EQ(table.size(), 0);
  EXPECT_EQ(table.Check(7, 1), Verdict::kExpired);
}

TEST(SessionTable, LatestCommandIsADuplicateWithItsCachedResult) {
  SessionTable table;
  Register(table, 7);
  table.Record(7, 1, "first", 100);
  table.Record(7, 2, "second", 200);
  std::string cached;
  EXPECT_EQ(table.Check(7, 2, &cached), Verdict::kDuplicate);
  EXPECT_EQ(cached, "second");
  EXPECT_EQ(table.Check(7, 1), Verdict::kStale);
  EXPECT_EQ(table.Check(7, 3), Verdict::kNew);
}

TEST(SessionTable, ExpiresSessionsIdleLongerThanTheTtl) {
  SessionTable table({.session_ttl = absl::Microseconds(1000)});
  Register(table, 1, 0);
  Register(table, 2, 500);
  EXPECT_EQ(table.ExpireIdle(1000), 0);  // idle exactly the TTL: kept
  EXPECT_EQ(table.ExpireIdle(1001), 1);
  EXPECT_EQ(table.size(), 1);
  EXPECT_EQ(table.Check(1, 1), Verdict::kExpired);
  // Activity moves the session back to the end of the expiry queue.
  table.Record(2, 1, "", 1400);
  EXPECT_EQ(table.ExpireIdle(2000), 0);
  EXPECT_EQ(table.ExpireIdle(2401), 1);
  EXPECT_EQ(table.size(), 0);
}

TEST(SessionTable, FirstCommandRetriedAfterExpiryIsRefused) {
  SessionTable table({.session_ttl = absl::Microseconds(1000)});
  Register(table, 1, 0);
  ASSERT_EQ(table.Check(1, 1), Verdict::kNew);
  table.Record(1, 1, "", 10);
  EXPECT_EQ(table.ExpireIdle(1011), 1);
  EXPECT_EQ(table.Check(1, 1), Verdict::kExpired);
}

TEST(SessionTable, InfiniteTtlNeverExpires) {
  SessionTable table({.session_ttl = absl::InfiniteDuration()});
  Register(table, 1, 0);
  EXPECT_EQ(table.ExpireIdle(std::numeric_limits<int64_t>::max()), 0);
  EXPECT_EQ(table.size(), 1);
}

TEST(SessionTable, MaxSessionsEvictsTheLeastRecentlyActive) {
  SessionTable table({.max_sessions = 2});
  Register(table, 1, 10);
  Register(table, 2, 20);
  table.Record(1, 1, "", 30);  // client 1 is now the most recent
  Register(table, 3, 40);
  EXPECT_EQ(table.size(), 2);
  EXPECT_EQ(table.Check(2, 1), Verdict::kExpired);
  EXPECT_EQ(table.Check(1, 1), Verdict::kDuplicate);
  EXPECT_EQ(table.Check(3, 1), Verdict::kNew);
}

TEST(SessionTable, EvictedClientsFirstCommandRetryIsRefused) {
  SessionTable table({.max_sessions = 1});
  Register(table, 1, 10);
  table.Record(1, 1, "", 20);
  Register(table, 2, 30);  // evicts client 1
  EXPECT_EQ(table.Check(1, 1), Verdict::kExpired);
}

TEST(SessionTable, SaveAndLoadRoundTripsWithStableBytes) {
  SessionTable table({.session_ttl = absl::Microseconds(100)});
  Register(table, 9, 40);
  table.Record(9, 3, "nine", 50);
  Register(table, 4, 55);
  table.Record(4, 1, "four", 60);
  Register(table, 6, 70);  // registered, nothing applied yet
  pb::SessionTableState state;
  table.SaveTo(&state);
  ASSERT_EQ(state.sessions_size(), 3);
  EXPECT_EQ(state.sessions(0).client_id(), 4u);  // sorted by client id

  SessionTable restored({.session_ttl = absl::Microseconds(100)});
  ASSERT_TRUE(restored.LoadFrom(state).ok());
  std::string cached;
  EXPECT_EQ(restored.Check(9, 3, &cached), Verdict::kDuplicate);
  EXPECT_EQ(cached, "nine");
  EXPECT_EQ(restored.Check(6, 1), Verdict::kNew);
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
  Register(table, 1);
  EXPECT_EQ(table.LoadFrom(state).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table.size(), 0);
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
}  // namespace ds::kv
