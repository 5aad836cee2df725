// rsm::SessionTable::Merge and MergeTable (raft/rsm/session_table.h): how a group takes in
// the client sessions that come with a shard it installs, so that no command
// the previous owner applied is applied again here.
#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "proto/rsm.pb.h"
#include "raft/rsm/session_table.h"

namespace ds::rsm {
namespace {

using Verdict = SessionTable::Verdict;

constexpr int64_t kT0 = 1'700'000'000'000'000;

pb::ClientSession Session(uint64_t client_id, int64_t created, uint64_t last_sequence,
                          const std::string& last_result, int64_t last_active = kT0) {
  pb::ClientSession s;
  s.set_client_id(client_id);
  s.set_created_unix_micros(created);
  s.set_last_sequence(last_sequence);
  s.set_last_result(last_result);
  s.set_last_active_unix_micros(last_active);
  return s;
}

// The verdict for `sequence` of (client_id, created) and, on kDuplicate, the
// cached result after a '='.
std::string Classify(const SessionTable& table, uint64_t client_id, int64_t created,
                     uint64_t sequence) {
  std::string cached;
  switch (table.Check(MakeSessionRef(client_id, created, sequence), &cached)) {
    case Verdict::kNew:
      return "new";
    case Verdict::kOpen:
      return "open";
    case Verdict::kDuplicate:
      return "duplicate=" + cached;
    case Verdict::kStale:
      return "stale";
    case Verdict::kExpired:
      return "expired";
  }
  return "?";
}

TEST(SessionTableMerge, UnknownSessionIsAddedAsItWasThere) {
  SessionTable table;
  table.Merge(Session(7, kT0, 5, "r5"), kT0 + 100);
  EXPECT_EQ(table.size(), 1);
  EXPECT_EQ(Classify(table, 7, kT0, 5), "duplicate=r5");
  EXPECT_EQ(Classify(table, 7, kT0, 4), "stale");
  EXPECT_EQ(Classify(table, 7, kT0, 6), "new");
  EXPECT_EQ(Classify(table, 7, kT0 + 1, 6), "expired") << "another creation time";
  EXPECT_EQ(table.watermark_unix_micros(), 0);
}

TEST(SessionTableMerge, SessionWithNothingAppliedYetIsAddedOpen) {
  SessionTable table;
  table.Merge(Session(7, kT0, 0, ""), kT0);
  EXPECT_EQ(table.size(), 1);
  EXPECT_EQ(Classify(table, 7, kT0, 1), "new");
}

TEST(SessionTableMerge, ClientIdZeroIsIgnored) {
  SessionTable table;
  table.Merge(Session(0, kT0, 5, "r5"), kT0);
  EXPECT_EQ(table.size(), 0);
}

TEST(SessionTableMerge, KnownSessionKeepsTheLaterSequenceAndItsResult) {
  SessionTable table;
  table.Open(MakeSessionRef(7, kT0, 1), kT0);
  table.Record(7, 3, "r3", kT0);
  table.Merge(Session(7, kT0, 5, "r5"), kT0 + 1);  // theirs is later
  EXPECT_EQ(Classify(table, 7, kT0, 5), "duplicate=r5");
  table.Merge(Session(7, kT0, 4, "r4"), kT0 + 2);  // ours is later
  EXPECT_EQ(Classify(table, 7, kT0, 5), "duplicate=r5");
  EXPECT_EQ(Classify(table, 7, kT0, 4), "stale");
  table.Merge(Session(7, kT0, 5, "r5"), kT0 + 3);  // the same
  EXPECT_EQ(Classify(table, 7, kT0, 5), "duplicate=r5");
  EXPECT_EQ(table.size(), 1);
}

TEST(SessionTableMerge, KnownIdWithAnotherCreationTimeKeepsOurs) {
  SessionTable table;
  table.Open(MakeSessionRef(7, kT0, 1), kT0);
  table.Record(7, 2, "ours", kT0);
  table.Merge(Session(7, kT0 + 50, 9, "theirs"), kT0 + 1);
  EXPECT_EQ(Classify(table, 7, kT0, 2), "duplicate=ours");
  EXPECT_EQ(Classify(table, 7, kT0 + 50, 9), "expired");
  EXPECT_EQ(table.size(), 1);
}

TEST(SessionTableMerge, MergedSessionIsActiveNowNotWhenItWasThere) {
  SessionOptions options;
  options.session_ttl = absl::Seconds(10);
  SessionTable table(options);
  // Idle for an hour at the other table, merged now: kept for a TTL from now.
  table.Merge(Session(7, kT0, 1, "r1", /*last_active=*/kT0), kT0 + 3'600'000'000);
  EXPECT_EQ(table.ExpireIdle(kT0 + 3'600'000'000 + 5'000'000), 0);
  EXPECT_EQ(Classify(table, 7, kT0, 1), "duplicate=r1");
  EXPECT_EQ(table.ExpireIdle(kT0 + 3'600'000'000 + 20'000'000), 1);
}

TEST(SessionTableMerge, RespectsMaxSessionsEvictingTheLeastRecentlyActive) {
  SessionOptions options;
  options.max_sessions = 2;
  SessionTable table(options);
  table.Open(MakeSessionRef(1, kT0 + 1, 1), kT0 + 10);
  table.Record(1, 1, "a", kT0 + 10);
  table.Open(MakeSessionRef(2, kT0 + 2, 1), kT0 + 20);
  table.Record(2, 1, "b", kT0 + 20);
  table.Record(1, 2, "a2", kT0 + 30);  // 2 is now the least recently active
  table.Merge(Session(3, kT0 + 3, 4, "c"), kT0 + 40);
  EXPECT_EQ(table.size(), 2);
  EXPECT_EQ(table.watermark_unix_micros(), kT0 + 2) << "2's creation time";
  EXPECT_EQ(Classify(table, 2, kT0 + 2, 2), "expired");
  EXPECT_EQ(Classify(table, 1, kT0 + 1, 2), "duplicate=a2");
  EXPECT_EQ(Classify(table, 3, kT0 + 3, 4), "duplicate=c");
  // A known session merged into a full table evicts nobody.
  table.Merge(Session(1, kT0 + 1, 3, "a3"), kT0 + 50);
  EXPECT_EQ(table.size(), 2);
  EXPECT_EQ(Classify(table, 3, kT0 + 3, 4), "duplicate=c");
  EXPECT_EQ(Classify(table, 1, kT0 + 1, 3), "duplicate=a3");
}

TEST(SessionTableMerge, SurvivesSaveAndLoad) {
  SessionTable table;
  table.Merge(Session(7, kT0, 5, "r5"), kT0 + 100);
  pb::SessionTableState state;
  table.SaveTo(&state);
  SessionTable copy;
  ASSERT_TRUE(copy.LoadFrom(state).ok());
  EXPECT_EQ(Classify(copy, 7, kT0, 5), "duplicate=r5");
  pb::SessionTableState again;
  copy.SaveTo(&again);
  EXPECT_EQ(again.SerializeAsString(), state.SerializeAsString());
}

// A session this table forgot (created at or before its watermark) must not
// come back through Merge with the other table's older sequence: a retry of
// the later command this table applied before forgetting it would be kNew
// (applied twice); without the merge it is kExpired.
TEST(SessionTableMerge, ASessionThisTableForgotIsNotResurrectedWithAnOlderSequence) {
  SessionOptions options;
  options.max_sessions = 1;
  SessionTable table(options);
  table.Open(MakeSessionRef(7, kT0, 1), kT0);
  table.Record(7, 8, "r8", kT0);                       // seq 8 applied here
  table.Open(MakeSessionRef(8, kT0 + 1, 1), kT0 + 1);  // evicts 7
  ASSERT_EQ(Classify(table, 7, kT0, 8), "expired");
  table.Merge(Session(7, kT0, 5, "r5"), kT0 + 2);  // the other group saw seq 5
  const std::string v = Classify(table, 7, kT0, 8);
  EXPECT_NE(v, "new") << "seq 8 was applied here before 7 was forgotten";
}

// MergeTable: the other table's watermark comes along. A session this table
// knows at sequence 3 that the other table forgot (created at or before its
// watermark) may have had sequence 5 applied there: its retry here must be
// refused, not taken for new.
TEST(SessionTableMergeTable, ASessionTheOtherTableForgotIsForgottenHereToo) {
  SessionTable table;
  table.Open(MakeSessionRef(7, kT0, 1), kT0);
  table.Record(7, 3, "r3", kT0);                    // seq 3 applied here
  table.Open(MakeSessionRef(9, kT0 + 50, 1), kT0);  // created after their watermark
  table.Record(9, 1, "n1", kT0);
  pb::SessionTableState theirs;
  theirs.set_watermark_unix_micros(kT0 + 10);             // they forgot 7 (after applying seq 5)
  *theirs.add_sessions() = Session(8, kT0 + 5, 2, "e2");  // created below their watermark
  table.MergeTable(theirs, kT0 + 100);
  EXPECT_EQ(Classify(table, 7, kT0, 5), "expired") << "seq 5 may have been applied there";
  EXPECT_EQ(Classify(table, 7, kT0, 4), "expired");
  EXPECT_EQ(table.watermark_unix_micros(), kT0 + 10);
  EXPECT_EQ(Classify(table, 8, kT0 + 5, 2), "duplicate=e2") << "they knew it: it comes along";
  EXPECT_EQ(Classify(table, 9, kT0 + 50, 1), "duplicate=n1") << "created after: kept";
  EXPECT_EQ(Classify(table, 10, kT0 + 5, 1), "expired") << "unknown below the watermark";
  EXPECT_EQ(Classify(table, 10, kT0 + 11, 1), "open");
}

TEST(SessionTableMergeTable, KnownOnBothSidesKeepsTheLaterSequence) {
  SessionTable table;
  table.Open(MakeSessionRef(7, kT0, 1), kT0);
  table.Record(7, 3, "r3", kT0);
  pb::SessionTableState theirs;
  theirs.set_watermark_unix_micros(kT0 + 10);
  *theirs.add_sessions() = Session(7, kT0, 5, "r5");
  table.MergeTable(theirs, kT0 + 100);
  EXPECT_EQ(Classify(table, 7, kT0, 5), "duplicate=r5");
  EXPECT_EQ(Classify(table, 7, kT0, 6), "new");
  EXPECT_EQ(table.size(), 1);
}

TEST(SessionTableMergeTable, KeepsItsOwnWatermarkForSessionsItForgot) {
  SessionOptions options;
  options.max_sessions = 1;
  SessionTable table(options);
  table.Open(MakeSessionRef(7, kT0 + 20, 1), kT0);
  table.Record(7, 8, "r8", kT0);
  table.Open(MakeSessionRef(8, kT0 + 30, 1), kT0 + 1);  // evicts 7: watermark kT0 + 20
  pb::SessionTableState theirs;
  theirs.set_watermark_unix_micros(kT0 + 1);  // lower than ours
  *theirs.add_sessions() = Session(7, kT0 + 20, 5, "r5");
  table.MergeTable(theirs, kT0 + 2);
  EXPECT_EQ(table.watermark_unix_micros(), kT0 + 20) << "never lowered";
  EXPECT_EQ(Classify(table, 7, kT0 + 20, 8), "expired") << "seq 8 was applied here";
}

TEST(SessionTableMergeTable, SameTableOnEveryReplica) {
  auto build = [] {
    SessionTable table;
    for (uint64_t id = 1; id <= 20; ++id) {
      table.Open(MakeSessionRef(id, kT0 + static_cast<int64_t>(id), 1), kT0);
      table.Record(id, id, "r", kT0);
    }
    pb::SessionTableState theirs;
    theirs.set_watermark_unix_micros(kT0 + 10);
    for (uint64_t id = 5; id <= 25; id += 5) {
      *theirs.add_sessions() = Session(id, kT0 + static_cast<int64_t>(id), 30, "t");
    }
    table.MergeTable(theirs, kT0 + 100);
    pb::SessionTableState out;
    table.SaveTo(&out);
    return out.SerializeAsString();
  };
  EXPECT_EQ(build(), build());
}

}  // namespace
}  // namespace ds::rsm
