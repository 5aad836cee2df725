// Unit tests of the core's small pure modules: quorum math, progress and
// in-flight windows, the log (stable + unstable), MemoryStorage, the RNG.
#include <set>

#include "gtest/gtest.h"
#include "raft/core/log.h"
#include "raft/core/progress.h"
#include "raft/core/quorum.h"
#include "raft/core/rng.h"
#include "raft/storage/memory_storage.h"

namespace ds::raft {
namespace {

pb::Entry E(uint64_t index, uint64_t term, std::string data = "") {
  pb::Entry e;
  e.set_index(index);
  e.set_term(term);
  e.set_data(std::move(data));
  return e;
}

std::vector<pb::Entry> Terms(uint64_t first, std::vector<uint64_t> terms) {
  std::vector<pb::Entry> out;
  for (uint64_t t : terms) out.push_back(E(first++, t));
  return out;
}

// ---- Quorum ----

TEST(Quorum, CommittedIndexIsTheMajorityMatch) {
  std::map<uint64_t, uint64_t> match = {{1, 5}, {2, 3}, {3, 9}};
  auto acked = [&](uint64_t id) { return match[id]; };
  EXPECT_EQ(CommittedIndex({1, 2, 3}, acked), 5u);
  match = {{1, 5}, {2, 3}, {3, 9}, {4, 1}, {5, 2}};
  EXPECT_EQ(CommittedIndex({1, 2, 3, 4, 5}, acked), 3u);
  EXPECT_EQ(CommittedIndex({}, acked), 0u);
}

TEST(Quorum, TallyVotesWinsLosesOrWaits) {
  EXPECT_EQ(TallyVotes({1, 2, 3}, {{1, true}}), VoteResult::kPending);
  EXPECT_EQ(TallyVotes({1, 2, 3}, {{1, true}, {2, true}}), VoteResult::kWon);
  EXPECT_EQ(TallyVotes({1, 2, 3}, {{1, true}, {2, false}, {3, false}}), VoteResult::kLost);
  // Votes from non-voters do not count.
  EXPECT_EQ(TallyVotes({1, 2, 3}, {{1, true}, {9, true}}), VoteResult::kPending);
  EXPECT_EQ(TallyVotes({1}, {{1, true}}), VoteResult::kWon);
}

// ---- Progress ----

TEST(Inflights, FullByCountOrBytes) {
  Inflights by_count(2, 0);
  by_count.Add(1, 10);
  EXPECT_FALSE(by_count.Full());
  by_count.Add(2, 10);
  EXPECT_TRUE(by_count.Full());
  by_count.FreeLE(1);
  EXPECT_FALSE(by_count.Full());

  Inflights by_bytes(100, 50);
  by_bytes.Add(1, 30);
  EXPECT_FALSE(by_bytes.Full());
  by_bytes.Add(2, 30);
  EXPECT_TRUE(by_bytes.Full());
  EXPECT_EQ(by_bytes.bytes(), 60u);
  by_bytes.FreeFirstOne();
  EXPECT_EQ(by_bytes.bytes(), 30u);
}

TEST(Progress, ProbeSendsOneMessageAtATime) {
  Progress pr(5, 10, 0);
  EXPECT_FALSE(pr.IsPaused());
  pr.SentEntries(7, 100, true);
  EXPECT_TRUE(pr.IsPaused());
  EXPECT_EQ(pr.next, 5u) << "probe does not advance next optimistically";
  EXPECT_TRUE(pr.MaybeUpdate(7));
  pr.BecomeReplicate();
  EXPECT_EQ(pr.next, 8u);
}

TEST(Progress, ReplicatePipelinesWithinTheWindow) {
  Progress pr(1, 2, 0);
  pr.BecomeReplicate();
  pr.SentEntries(3, 10, true);
  EXPECT_EQ(pr.next, 4u);
  pr.SentEntries(5, 10, true);
  EXPECT_TRUE(pr.IsPaused());
  EXPECT_TRUE(pr.MaybeUpdate(3));
  pr.inflights.FreeLE(3);
  EXPECT_FALSE(pr.IsPaused());
}

TEST(Progress, StaleRejectionsAreIgnored) {
  Progress pr(1, 10, 0);
  pr.MaybeUpdate(5);
  pr.BecomeReplicate();
  pr.SentEntries(9, 10, true);
  EXPECT_FALSE(pr.MaybeDecrTo(4, 4)) << "index 4 is below match: stale";
  EXPECT_TRUE(pr.MaybeDecrTo(7, 6));
  EXPECT_EQ(pr.next, 6u);
  // In probe, only a rejection of the probe actually sent (next - 1) counts.
  pr.BecomeProbe();
  EXPECT_FALSE(pr.MaybeDecrTo(8, 2));
  EXPECT_TRUE(pr.MaybeDecrTo(5, 2));
  EXPECT_EQ(pr.next, 6u) << "never below match + 1";
}

TEST(Progress, SnapshotStateWaitsThenProbesAfterTheSnapshot) {
  Progress pr(1, 10, 0);
  pr.BecomeSnapshot(20);
  EXPECT_TRUE(pr.IsPaused());
  pr.BecomeProbe();
  EXPECT_EQ(pr.next, 21u);
}

// ---- RaftLog ----

TEST(RaftLog, AppendTruncatesConflictingSuffix) {
  MemoryStorage storage;
  RaftLog log(&storage);
  log.Append(Terms(1, {1, 1, 2}));
  EXPECT_EQ(log.LastIndex(), 3u);
  log.Append(Terms(2, {3}));
  EXPECT_EQ(log.LastIndex(), 2u);
  EXPECT_EQ(log.TermOrZero(2), 3u);
  EXPECT_EQ(log.TermOrZero(3), 0u);
}

TEST(RaftLog, ReadsSpanStorageAndUnstable) {
  MemoryStorage storage;
  ASSERT_TRUE(storage.Save(nullptr, Terms(1, {1, 1, 1}), true).ok());
  RaftLog log(&storage);
  log.Append(Terms(4, {2, 2}));
  auto s = log.Slice(2, 6, UINT64_MAX);
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s->size(), 4u);
  EXPECT_EQ((*s)[0].index(), 2u);
  EXPECT_EQ((*s)[3].term(), 2u);
  // A conflicting append replaces the storage tail in the unstable part.
  log.Append(Terms(3, {3}));
  EXPECT_EQ(log.LastIndex(), 3u);
  EXPECT_EQ(log.TermOrZero(3), 3u);
  EXPECT_EQ(log.unstable_entries().front().index(), 3u);
}

TEST(RaftLog, SliceRespectsByteLimitButReturnsAtLeastOne) {
  MemoryStorage storage;
  RaftLog log(&storage);
  log.Append({E(1, 1, std::string(100, 'a')), E(2, 1, std::string(100, 'b')),
              E(3, 1, std::string(100, 'c'))});
  auto s = log.Slice(1, 4, 250);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->size(), 2u);
  s = log.Slice(1, 4, 1);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->size(), 1u);
}

TEST(RaftLog, MaybeAppendRejectsMismatchAndCommitsOnlyWhatItHas) {
  MemoryStorage storage;
  RaftLog log(&storage);
  log.Append(Terms(1, {1, 2}));
  EXPECT_FALSE(log.MaybeAppend(2, 1, 5, Terms(3, {2})).has_value()) << "term at 2 is 2, not 1";
  auto last = log.MaybeAppend(2, 2, 5, Terms(3, {2}));
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(*last, 3u);
  EXPECT_EQ(log.committed(), 3u) << "commit = min(leader commit, last new entry)";
}

TEST(RaftLog, FindConflictByTermSkipsWholeTerms) {
  MemoryStorage storage;
  RaftLog log(&storage);
  log.Append(Terms(1, {1, 1, 2, 2, 2, 4, 4}));
  // A leader probing at index 7 with term 3: our last entry with term <= 3 is 5.
  auto [index, term] = log.FindConflictByTerm(7, 3);
  EXPECT_EQ(index, 5u);
  EXPECT_EQ(term, 2u);
  EXPECT_EQ(log.FindConflictByTerm(7, 1).first, 2u);
  EXPECT_EQ(log.FindConflictByTerm(7, 4).first, 7u);
}

TEST(RaftLog, StableToIgnoresReplacedEntries) {
  MemoryStorage storage;
  RaftLog log(&storage);
  log.Append(Terms(1, {1, 1}));
  log.Append(Terms(2, {2}));  // replaced before the driver saved (2, 1)
  log.StableTo(2, 1);
  EXPECT_EQ(log.unstable_entries().size(), 2u);
  log.StableTo(2, 2);
  EXPECT_TRUE(log.unstable_entries().empty());
}

TEST(RaftLog, RestoreReplacesTheLogWithASnapshot) {
  MemoryStorage storage;
  RaftLog log(&storage);
  log.Append(Terms(1, {1, 1}));
  pb::Snapshot snap;
  snap.mutable_metadata()->set_index(10);
  snap.mutable_metadata()->set_term(3);
  log.Restore(snap);
  EXPECT_EQ(log.FirstIndex(), 11u);
  EXPECT_EQ(log.LastIndex(), 10u);
  EXPECT_EQ(log.committed(), 10u);
  EXPECT_EQ(log.TermOrZero(10), 3u);
  EXPECT_FALSE(log.Term(5).ok());
  EXPECT_FALSE(log.HasNextCommittedEntries());
}

// ---- MemoryStorage ----

TEST(MemoryStorage, CrashLosesOnlyUnsyncedWrites) {
  MemoryStorage s;
  pb::HardState hs;
  hs.set_term(2);
  hs.set_vote(1);
  ASSERT_TRUE(s.Save(&hs, Terms(1, {1, 2}), /*sync=*/true).ok());
  hs.set_commit(2);
  ASSERT_TRUE(s.Save(&hs, {}, /*sync=*/false).ok());
  ASSERT_TRUE(s.Save(nullptr, Terms(3, {2}), /*sync=*/false).ok());
  EXPECT_EQ(s.LastIndex(), 3u);
  s.SimulateCrash();
  EXPECT_EQ(s.hard_state().commit(), 0u);
  EXPECT_EQ(s.hard_state().term(), 2u);
  EXPECT_EQ(s.LastIndex(), 2u);
}

TEST(MemoryStorage, CreateSnapshotCompactsAndKeepsTheBoundaryTerm) {
  MemoryStorage s;
  ASSERT_TRUE(s.Save(nullptr, Terms(1, {1, 1, 2, 2}), true).ok());
  pb::ConfState cs;
  cs.add_voters(1);
  ASSERT_TRUE(s.CreateSnapshot(3, cs, "state").ok());
  EXPECT_EQ(s.FirstIndex(), 4u);
  EXPECT_EQ(s.LastIndex(), 4u);
  EXPECT_EQ(*s.Term(3), 2u);
  EXPECT_EQ(s.Term(2).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(s.Entries(2, 4, UINT64_MAX).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(s.CreateSnapshot(2, cs, "old").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.SnapshotBytes(), 5u);
  auto init = s.GetInitialState();
  ASSERT_TRUE(init.ok());
  EXPECT_EQ(init->conf_state.voters_size(), 1);
}

TEST(MemoryStorage, RaftStateBytesShrinksWithCompaction) {
  MemoryStorage s;
  std::vector<pb::Entry> ents;
  for (uint64_t i = 1; i <= 10; ++i) ents.push_back(E(i, 1, std::string(100, 'x')));
  ASSERT_TRUE(s.Save(nullptr, ents, true).ok());
  const uint64_t before = s.RaftStateBytes();
  EXPECT_GT(before, 1000u);
  ASSERT_TRUE(s.CreateSnapshot(9, pb::ConfState(), "").ok());
  EXPECT_LT(s.RaftStateBytes(), before / 5);
}

// ---- Rng ----

TEST(Rng, SameSeedSameSequenceAndUniformStaysInRange) {
  Rng a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const uint64_t x = a.Next();
    EXPECT_EQ(x, b.Next());
    differs |= x != c.Next();
  }
  EXPECT_TRUE(differs);
  std::set<uint64_t> seen;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t v = a.Uniform(7);
    ASSERT_LT(v, 7u);
    seen.insert(v);
  }
  EXPECT_EQ(seen.size(), 7u);
}

}  // namespace
}  // namespace ds::raft
