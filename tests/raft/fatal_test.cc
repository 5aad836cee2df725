// Impossible states fail loudly (docs/raft.md, "Impossible states"): where the
// log or storage holds a state only a bug or corruption produces, the core
// stops the process with a message naming the indexes (death tests), and
// corrupt storage found at restart is an error (status tests). Alongside, the
// states a stale, duplicated or reordered message legitimately carries, which
// must not stop anything.
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "raft/core/core.h"
#include "raft/core/log.h"
#include "raft/node/node.h"
#include "raft/storage/memory_storage.h"

namespace ds::raft {
namespace {

pb::Entry E(uint64_t index, uint64_t term) {
  pb::Entry e;
  e.set_index(index);
  e.set_term(term);
  return e;
}

std::vector<pb::Entry> Terms(uint64_t first, std::vector<uint64_t> terms) {
  std::vector<pb::Entry> out;
  for (uint64_t t : terms) out.push_back(E(first++, t));
  return out;
}

pb::Message Msg(pb::MessageType type, uint64_t from, uint64_t to, uint64_t term) {
  pb::Message m;
  m.set_type(type);
  m.set_from(from);
  m.set_to(to);
  m.set_term(term);
  return m;
}

Options ThreeNodes() {
  Options o;
  o.peers = {1, 2, 3};
  return o;
}

// A MemoryStorage whose reads can be damaged: it "loses" entries past
// `lose_after` (Term and Entries fail there, as a truncated file would) or
// rewrites what Entries returns.
class DamagedStorage : public Storage {
 public:
  absl::StatusOr<InitialState> GetInitialState() override { return inner.GetInitialState(); }
  absl::StatusOr<std::vector<pb::Entry>> Entries(uint64_t lo, uint64_t hi,
                                                 uint64_t max_bytes) override {
    if (lose_after && hi > *lose_after + 1) return absl::OutOfRangeError("lost");
    auto out = inner.Entries(lo, hi, max_bytes);
    if (out.ok() && damage) damage(*out);
    return out;
  }
  absl::StatusOr<uint64_t> Term(uint64_t i) override {
    if (lose_after && i > *lose_after) return absl::OutOfRangeError("lost");
    return inner.Term(i);
  }
  uint64_t FirstIndex() override { return inner.FirstIndex(); }
  uint64_t LastIndex() override { return inner.LastIndex(); }
  uint64_t SnapshotIndex() override { return inner.SnapshotIndex(); }
  absl::StatusOr<pb::Snapshot> GetSnapshot() override { return inner.GetSnapshot(); }
  absl::Status Save(const pb::HardState* hs, const std::vector<pb::Entry>& entries,
                    bool sync) override {
    return inner.Save(hs, entries, sync);
  }
  absl::Status ApplySnapshot(const pb::Snapshot& snapshot) override {
    return inner.ApplySnapshot(snapshot);
  }
  using Storage::CreateSnapshot;
  absl::Status CreateSnapshot(uint64_t index, const pb::ConfState& conf_state, std::string data,
                              const LogRetention& keep) override {
    return inner.CreateSnapshot(index, conf_state, std::move(data), keep);
  }
  uint64_t RaftStateBytes() override { return inner.RaftStateBytes(); }
  uint64_t SnapshotBytes() override { return inner.SnapshotBytes(); }

  MemoryStorage inner;
  std::optional<uint64_t> lose_after;
  std::function<void(std::vector<pb::Entry>&)> damage;
};

// ---- RaftLog: commit ----

TEST(RaftLogDeathTest, CommitBeyondTheLastIndexStops) {
  MemoryStorage s;
  RaftLog log(&s);
  log.Append(Terms(1, {1, 1, 1}));
  EXPECT_DEATH(log.CommitTo(5),
               "raft: commit index 5 is beyond last index 3 \\(commit 0\\)\\. Was the raft log "
               "corrupted, truncated, or lost\\?");
}

TEST(RaftLog, AnOlderCommitIndexIsIgnored) {
  MemoryStorage s;
  RaftLog log(&s);
  log.Append(Terms(1, {1, 1, 1}));
  log.CommitTo(3);
  log.CommitTo(2);  // a stale message's commit index
  EXPECT_EQ(log.committed(), 3u);
}

// ---- RaftLog: append ----

TEST(RaftLogDeathTest, AppendOverACommittedEntryStops) {
  MemoryStorage s;
  RaftLog log(&s);
  log.Append(Terms(1, {1, 1, 1}));
  log.CommitTo(2);
  EXPECT_DEATH(log.Append(Terms(2, {2})),
               "raft: appending from index 2 would overwrite committed entries \\(commit 2\\)");
}

TEST(RaftLogDeathTest, AppendLeavingAGapStops) {
  MemoryStorage s;
  RaftLog log(&s);
  log.Append(Terms(1, {1, 1, 1}));
  EXPECT_DEATH(log.Append(Terms(5, {1})),
               "raft: appending from index 5 leaves a gap after last index 3");
}

TEST(RaftLogDeathTest, AppendOfNonContiguousEntriesStops) {
  MemoryStorage s;
  RaftLog log(&s);
  EXPECT_DEATH(log.Append({E(1, 1), E(3, 1)}),
               "raft: appended entry 3 at position 1, want index 2");
}

TEST(RaftLogDeathTest, AppendOfALowerTermStops) {
  MemoryStorage s;
  RaftLog log(&s);
  log.Append(Terms(1, {1, 2}));
  EXPECT_DEATH(log.Append(Terms(3, {1})),
               "raft: appended entry 3 has term 1, lower than term 2 of the entry before it");
}

TEST(RaftLogDeathTest, MaybeAppendConflictingWithACommittedEntryStops) {
  MemoryStorage s;
  RaftLog log(&s);
  log.Append(Terms(1, {1, 1, 1}));
  log.CommitTo(3);
  EXPECT_DEATH(log.MaybeAppend(1, 1, 3, Terms(2, {2})),
               "raft: entry 2 term 2 conflicts with committed entry 2 term 1 \\(commit 3\\)");
}

TEST(RaftLog, MaybeAppendOfCommittedEntriesThatMatchIsANoOp) {
  MemoryStorage s;
  RaftLog log(&s);
  log.Append(Terms(1, {1, 1, 1}));
  log.CommitTo(3);
  // A duplicated MsgApp carrying entries we already committed.
  auto last = log.MaybeAppend(1, 1, 2, Terms(2, {1, 1}));
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(*last, 3u);
  EXPECT_EQ(log.committed(), 3u);
  EXPECT_EQ(log.LastIndex(), 3u);
}

// ---- RaftLog: apply and snapshots ----

TEST(RaftLogDeathTest, AppliedBeyondCommitStops) {
  MemoryStorage s;
  RaftLog log(&s);
  log.Append(Terms(1, {1, 1, 1}));
  log.CommitTo(2);
  EXPECT_DEATH(log.AppliedTo(3), "raft: applied index 3 is out of range \\[applied 0, commit 2\\]");
}

TEST(RaftLogDeathTest, AppliedGoingBackStops) {
  MemoryStorage s;
  RaftLog log(&s);
  log.Append(Terms(1, {1, 1, 1}));
  log.CommitTo(2);
  log.AppliedTo(2);
  EXPECT_DEATH(log.AppliedTo(1), "raft: applied index 1 is out of range \\[applied 2, commit 2\\]");
}

TEST(RaftLogDeathTest, RestoringASnapshotNotNewerThanCommitStops) {
  MemoryStorage s;
  RaftLog log(&s);
  log.Append(Terms(1, {1, 1, 1}));
  log.CommitTo(3);
  pb::Snapshot snap;
  snap.mutable_metadata()->set_index(2);
  snap.mutable_metadata()->set_term(1);
  EXPECT_DEATH(log.Restore(snap),
               "raft: snapshot at index 2 term 1 is not newer than commit 3 \\(applied 0\\)");
}

TEST(RaftLogDeathTest, LogCompactedPastUnappliedEntriesStops) {
  MemoryStorage s;
  ASSERT_TRUE(s.Save(nullptr, Terms(1, {1, 1, 1, 1, 1}), true).ok());
  RaftLog log(&s);
  log.CommitTo(5);
  // A driver that compacts entries the application never received.
  ASSERT_TRUE(s.CreateSnapshot(3, pb::ConfState(), "").ok());
  EXPECT_DEATH(log.HasNextCommittedEntries(),
               "raft: log compacted up to index 3 but only entries up to 0 were handed out for "
               "applying \\(applied 0\\)");
}

// ---- RaftLog: what storage returns ----

TEST(RaftLogDeathTest, StorageReturningEntriesOutOfOrderStops) {
  DamagedStorage s;
  ASSERT_TRUE(s.inner.Save(nullptr, Terms(1, {1, 1, 1}), true).ok());
  RaftLog log(&s);
  log.CommitTo(3);
  s.damage = [](std::vector<pb::Entry>& es) { es[1].set_index(7); };
  EXPECT_DEATH(log.NextCommittedEntries(UINT64_MAX),
               "raft: storage returned entry 7 at position 1 of \\[1, 4\\), want index 2");
}

TEST(RaftLogDeathTest, StorageReturningADecreasingTermStops) {
  DamagedStorage s;
  ASSERT_TRUE(s.inner.Save(nullptr, Terms(1, {2, 2, 2}), true).ok());
  RaftLog log(&s);
  s.damage = [](std::vector<pb::Entry>& es) { es[2].set_term(1); };
  EXPECT_DEATH((void)log.Slice(1, 4, UINT64_MAX),
               "raft: storage returned entry 3 with term 1 after entry 2 with term 2");
}

TEST(RaftLogDeathTest, StorageReturningNoEntriesStops) {
  DamagedStorage s;
  ASSERT_TRUE(s.inner.Save(nullptr, Terms(1, {1, 1}), true).ok());
  RaftLog log(&s);
  s.damage = [](std::vector<pb::Entry>& es) { es.clear(); };
  EXPECT_DEATH((void)log.Slice(1, 3, UINT64_MAX),
               "raft: storage returned 0 entries for \\[1, 3\\)");
}

// Entries the driver saved (and the core marked stable) are gone from storage.
TEST(RaftLogDeathTest, StorageLosingSavedEntriesStops) {
  DamagedStorage s;
  RaftLog log(&s);
  log.Append(Terms(1, {1, 1, 1, 1}));
  ASSERT_TRUE(s.Save(nullptr, log.unstable_entries(), true).ok());
  log.StableTo(4, 1);
  log.Append(Terms(5, {1}));
  s.lose_after = 2;
  EXPECT_DEATH((void)log.Term(3), "raft: storage has no term for index 3 \\(first index 1");
  EXPECT_DEATH((void)log.Slice(1, 6, UINT64_MAX), "raft: storage cannot return entries \\[1, 5\\)");
}

// ---- Core ----

// The leader sends min(commit, our match) in heartbeats, so a commit beyond
// our log means we lost entries we acknowledged.
TEST(CoreDeathTest, HeartbeatCommitBeyondOurLogStops) {
  MemoryStorage s;
  ASSERT_TRUE(s.Save(nullptr, Terms(1, {1, 1}), true).ok());
  Core c(1, ThreeNodes(), &s);
  pb::Message hb = Msg(pb::MSG_HEARTBEAT, 2, 1, 1);
  hb.set_commit(5);
  EXPECT_DEATH((void)c.Step(hb),
               "raft: commit index 5 in a heartbeat from leader 2 \\(term 1\\) is beyond last "
               "index 2\\. Was the raft log corrupted, truncated, or lost\\?");
}

// §5.3: a leader's commit index may be ahead of what one MsgApp carries; the
// follower commits only up to the last entry it now knows matches.
TEST(Core, LeaderCommitBeyondTheAppendedEntriesIsLegitimate) {
  MemoryStorage s;
  Core c(1, ThreeNodes(), &s);
  pb::Message app = Msg(pb::MSG_APP, 2, 1, 1);
  *app.add_entries() = E(1, 1);
  app.set_commit(10);
  ASSERT_TRUE(c.Step(app).ok());
  EXPECT_EQ(c.commit(), 1u);
  // A stale duplicate with an older commit index changes nothing.
  app.set_commit(0);
  ASSERT_TRUE(c.Step(app).ok());
  EXPECT_EQ(c.commit(), 1u);
  EXPECT_EQ(c.last_index(), 1u);
}

TEST(Core, MalformedMsgAppIsRejectedNotFatal) {
  MemoryStorage s;
  Core c(1, ThreeNodes(), &s);
  pb::Message gap = Msg(pb::MSG_APP, 2, 1, 2);
  *gap.add_entries() = E(1, 1);
  *gap.add_entries() = E(3, 1);
  EXPECT_EQ(c.Step(gap).code(), absl::StatusCode::kInvalidArgument);
  pb::Message future = Msg(pb::MSG_APP, 2, 1, 2);
  *future.add_entries() = E(1, 3);  // a term beyond the leader's own
  EXPECT_EQ(c.Step(future).code(), absl::StatusCode::kInvalidArgument);
  pb::Message down = Msg(pb::MSG_APP, 2, 1, 2);
  *down.add_entries() = E(1, 2);
  *down.add_entries() = E(2, 1);
  EXPECT_EQ(c.Step(down).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.last_index(), 0u);
  EXPECT_EQ(c.term(), 0u) << "a rejected message changes nothing";
}

TEST(Core, AcknowledgementBeyondTheLeadersLogIsRejectedNotFatal) {
  MemoryStorage s;
  Options o = ThreeNodes();
  o.pre_vote = false;
  Core c(1, o, &s);
  while (c.role() != Role::kCandidate) c.Tick();
  ASSERT_TRUE(c.Step(Msg(pb::MSG_VOTE_RESP, 2, 1, c.term())).ok());
  ASSERT_EQ(c.role(), Role::kLeader);
  pb::Message ack = Msg(pb::MSG_APP_RESP, 2, 1, c.term());
  ack.set_index(c.last_index() + 5);
  EXPECT_EQ(c.Step(ack).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.progress().at(2).match, 0u);
}

// ---- Restart from corrupt storage ----

// Storage whose hard state says commit 5 over a log that ends at 2.
void SaveCommitBeyondLog(Storage& s) {
  pb::HardState hs;
  hs.set_term(1);
  hs.set_commit(5);
  ASSERT_TRUE(s.Save(&hs, Terms(1, {1, 1}), true).ok());
}

TEST(CheckStorageForRestart, AcceptsAConsistentStorage) {
  MemoryStorage s;
  EXPECT_TRUE(CheckStorageForRestart(s).ok());
  pb::HardState hs;
  hs.set_term(1);
  hs.set_commit(2);
  ASSERT_TRUE(s.Save(&hs, Terms(1, {1, 1}), true).ok());
  EXPECT_TRUE(CheckStorageForRestart(s).ok());
}

TEST(CheckStorageForRestart, ReportsACommitIndexBeyondTheLog) {
  MemoryStorage s;
  SaveCommitBeyondLog(s);
  absl::Status st = CheckStorageForRestart(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(st.message(),
            "hard state commit index 5 (term 1) is beyond last index 2 (first index 1). Was the "
            "raft log corrupted, truncated, or lost?");
}

TEST(CheckStorageForRestart, ReportsAnUnreadableInitialState) {
  MemoryStorage s;
  pb::Entry cc = E(1, 1);
  cc.set_type(pb::ENTRY_CONF_CHANGE);
  cc.set_data("\xff\xff");
  ASSERT_TRUE(s.Save(nullptr, {cc}, true).ok());
  absl::Status st = CheckStorageForRestart(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("cannot read the initial state"), std::string::npos) << st;
}

TEST(CoreDeathTest, RestartFromACommitIndexBeyondTheLogStops) {
  MemoryStorage s;
  SaveCommitBeyondLog(s);
  EXPECT_DEATH(Core(1, ThreeNodes(), &s),
               "raft: cannot restore node 1 from storage: hard state commit index 5 \\(term 1\\) "
               "is beyond last index 2");
}

// Starting with term 0 and no vote would let the node vote twice in a term.
TEST(CoreDeathTest, RestartFromAnUnreadableInitialStateStops) {
  MemoryStorage s;
  pb::Entry cc = E(1, 1);
  cc.set_type(pb::ENTRY_CONF_CHANGE);
  cc.set_data("\xff\xff");
  ASSERT_TRUE(s.Save(nullptr, {cc}, true).ok());
  EXPECT_DEATH(Core(1, ThreeNodes(), &s),
               "raft: cannot restore node 1 from storage: cannot read the initial state");
}

class NullTransport : public Transport {
 public:
  void Start(Handler) override {}
  void Send(std::vector<pb::Message>) override {}
  void Stop() override {}
};

TEST(RaftNode, StartReportsCorruptStorageAsAnError) {
  auto storage = std::make_unique<MemoryStorage>();
  SaveCommitBeyondLog(*storage);
  NodeOptions options;
  options.id = 1;
  options.raft.peers = {1, 2, 3};
  auto node = Node::Start(options, std::move(storage), std::make_unique<NullTransport>(),
                          [](ApplyBatch) {});
  EXPECT_EQ(node.status().code(), absl::StatusCode::kDataLoss) << node.status();
}

}  // namespace
}  // namespace ds::raft
