// Behaviour tests of the Core, each tied to a Raft paper / thesis section, on
// a tiny synchronous network (no timing: messages are delivered in order
// until the network is quiet).
#include <map>
#include <memory>
#include <set>

#include "gtest/gtest.h"
#include "raft/core/core.h"
#include "raft/storage/memory_storage.h"

namespace ds::raft {
namespace {

Options TestOptions(std::vector<uint64_t> peers) {
  Options o;
  o.peers = std::move(peers);
  return o;
}

// Nodes with storage; Deliver() runs the Ready loop of every node.
class Net {
 public:
  explicit Net(int n, Options base = Options()) {
    for (int i = 1; i <= n; ++i) base.peers.push_back(i);
    for (uint64_t id = 1; id <= static_cast<uint64_t>(n); ++id) {
      storage_[id] = std::make_unique<MemoryStorage>();
      Options o = base;
      o.seed = id;
      cores_[id] = std::make_unique<Core>(id, o, storage_[id].get());
    }
  }
  Core& operator[](uint64_t id) { return *cores_[id]; }
  MemoryStorage& storage(uint64_t id) { return *storage_[id]; }
  void Isolate(uint64_t id) { isolated_.insert(id); }
  void Heal() { isolated_.clear(); }
  // Messages of a type to drop, and a filter for what was sent.
  std::set<pb::MessageType> drop;
  std::vector<pb::Message> sent;

  // Runs Ready processing and message delivery until quiet.
  void Deliver() {
    for (int rounds = 0; rounds < 1000; ++rounds) {
      std::vector<pb::Message> msgs;
      for (auto& [id, core] : cores_) {
        while (core->HasReady()) {
          Ready rd = core->GetReady();
          ASSERT_TRUE(
              storage_[id]
                  ->Save(rd.hard_state ? &*rd.hard_state : nullptr, rd.entries, rd.must_sync)
                  .ok());
          if (rd.snapshot) {
            ASSERT_TRUE(storage_[id]->ApplySnapshot(*rd.snapshot).ok());
          }
          for (auto& m : rd.messages) msgs.push_back(m);
          for (auto& r : rd.read_states) read_states[id].push_back(r);
          core->Advance(rd);
        }
      }
      if (msgs.empty()) return;
      for (auto& m : msgs) {
        sent.push_back(m);
        if (drop.count(m.type()) || isolated_.count(m.from()) || isolated_.count(m.to())) continue;
        ASSERT_TRUE(cores_[m.to()]->Step(m).ok());
      }
    }
    FAIL() << "network never became quiet";
  }
  // Ticks node `id` until it starts a campaign, then delivers.
  void Elect(uint64_t id) {
    for (int i = 0; i < 100 && cores_[id]->role() == Role::kFollower; ++i) cores_[id]->Tick();
    Deliver();
  }
  int Count(pb::MessageType t, uint64_t to) const {
    int n = 0;
    for (auto& m : sent) n += m.type() == t && m.to() == to;
    return n;
  }
  std::map<uint64_t, std::vector<ReadState>> read_states;

 private:
  std::map<uint64_t, std::unique_ptr<MemoryStorage>> storage_;
  std::map<uint64_t, std::unique_ptr<Core>> cores_;
  std::set<uint64_t> isolated_;
};

pb::Message Msg(pb::MessageType type, uint64_t from, uint64_t to, uint64_t term) {
  pb::Message m;
  m.set_type(type);
  m.set_from(from);
  m.set_to(to);
  m.set_term(term);
  return m;
}

// §5.2: a follower that hears nothing starts an election within
// [election_ticks, 2 * election_ticks) ticks; with PreVote it first asks
// without changing its term.
TEST(RaftElection, FollowerCampaignsAfterRandomizedTimeout) {
  MemoryStorage s;
  Core c(1, TestOptions({1, 2, 3}), &s);
  int ticks = 0;
  while (c.role() == Role::kFollower && ticks < 100) {
    c.Tick();
    ++ticks;
  }
  EXPECT_GE(ticks, 10);
  EXPECT_LT(ticks, 20);
  EXPECT_EQ(c.role(), Role::kPreCandidate);
  EXPECT_EQ(c.term(), 0u) << "PreVote does not bump the term";
  Ready rd = c.GetReady();
  int pre_votes = 0;
  for (auto& m : rd.messages) {
    if (m.type() == pb::MSG_PRE_VOTE) {
      ++pre_votes;
      EXPECT_EQ(m.term(), 1u);
    }
  }
  EXPECT_EQ(pre_votes, 2);
}

TEST(RaftElection, ElectsExactlyOneLeader) {
  Net net(3);
  net.Elect(1);
  EXPECT_EQ(net[1].role(), Role::kLeader);
  EXPECT_EQ(net[2].leader(), 1u);
  EXPECT_EQ(net[3].leader(), 1u);
  EXPECT_EQ(net[2].term(), net[1].term());
}

// §5.4.1: a voter denies its vote to a candidate whose log is less up to date.
TEST(RaftPaper, VoteRestrictionDeniesStaleCandidates) {
  MemoryStorage s;
  pb::HardState hs;
  hs.set_term(2);
  std::vector<pb::Entry> ents(2);
  ents[0].set_index(1);
  ents[0].set_term(1);
  ents[1].set_index(2);
  ents[1].set_term(2);
  ASSERT_TRUE(s.Save(&hs, ents, true).ok());
  Options o = TestOptions({1, 2, 3});
  o.check_quorum = false;
  Core c(1, o, &s);
  // Same last term, shorter log: rejected.
  pb::Message vote = Msg(pb::MSG_VOTE, 2, 1, 3);
  vote.set_index(1);
  vote.set_log_term(2);
  ASSERT_TRUE(c.Step(vote).ok());
  // Older last term, longer log: rejected.
  vote = Msg(pb::MSG_VOTE, 3, 1, 3);
  vote.set_index(5);
  vote.set_log_term(1);
  ASSERT_TRUE(c.Step(vote).ok());
  Ready rd = c.GetReady();
  ASSERT_EQ(rd.messages.size(), 2u);
  EXPECT_TRUE(rd.messages[0].reject());
  EXPECT_TRUE(rd.messages[1].reject());
  EXPECT_EQ(c.vote(), 0u);
  c.Advance(rd);
  // Newer last term: granted, and the vote is persisted before the reply.
  vote = Msg(pb::MSG_VOTE, 3, 1, 3);
  vote.set_index(1);
  vote.set_log_term(3);
  ASSERT_TRUE(c.Step(vote).ok());
  rd = c.GetReady();
  ASSERT_EQ(rd.messages.size(), 1u);
  EXPECT_FALSE(rd.messages[0].reject());
  ASSERT_TRUE(rd.hard_state.has_value());
  EXPECT_EQ(rd.hard_state->vote(), 3u);
  EXPECT_TRUE(rd.must_sync);
}

// §5.2: a vote request with a higher term makes a voter follow that term, but
// only granting the vote restarts its election timer. A candidate with a
// stale log campaigning faster than our timeout must not keep us from
// campaigning (we hold the log it needs to win).
TEST(RaftPaper, RejectedCandidatesDoNotRestartTheElectionTimer) {
  MemoryStorage s;
  std::vector<pb::Entry> ents(3);
  for (int i = 0; i < 3; ++i) {
    ents[i].set_index(i + 1);
    ents[i].set_term(1);
  }
  pb::HardState hs;
  hs.set_term(1);
  ASSERT_TRUE(s.Save(&hs, ents, true).ok());
  Options o = TestOptions({1, 2});
  o.pre_vote = false;
  o.check_quorum = false;
  Core c(1, o, &s);
  uint64_t term = 1;
  int ticks = 0;
  // Node 2 (log ends at 1) campaigns every election_ticks - 1 ticks, always
  // before our randomized timeout (>= election_ticks) could expire.
  while (c.role() == Role::kFollower && ticks < 200) {
    if (ticks % (o.election_ticks - 1) == 0) {
      pb::Message vote = Msg(pb::MSG_VOTE, 2, 1, ++term);
      vote.set_index(1);
      vote.set_log_term(1);
      ASSERT_TRUE(c.Step(vote).ok());
      Ready rd = c.GetReady();
      ASSERT_EQ(rd.messages.size(), 1u);
      EXPECT_TRUE(rd.messages[0].reject());
      c.Advance(rd);
    }
    c.Tick();
    ++ticks;
  }
  EXPECT_EQ(c.role(), Role::kCandidate) << "never campaigned";
  EXPECT_LT(ticks, 2 * o.election_ticks + 1);
}

// §5.2: at most one vote per term.
TEST(RaftPaper, OneVotePerTerm) {
  MemoryStorage s;
  Options o = TestOptions({1, 2, 3});
  o.check_quorum = false;
  Core c(1, o, &s);
  ASSERT_TRUE(c.Step(Msg(pb::MSG_VOTE, 2, 1, 1)).ok());
  ASSERT_TRUE(c.Step(Msg(pb::MSG_VOTE, 3, 1, 1)).ok());
  Ready rd = c.GetReady();
  ASSERT_EQ(rd.messages.size(), 2u);
  EXPECT_FALSE(rd.messages[0].reject());
  EXPECT_TRUE(rd.messages[1].reject());
}

// §5.4.2: a leader never commits an entry from a previous term by counting
// replicas; it commits it only with an entry of its own term.
TEST(RaftPaper, CommitsPreviousTermEntriesOnlyThroughCurrentTerm) {
  MemoryStorage s;
  pb::HardState hs;
  hs.set_term(2);
  std::vector<pb::Entry> ents(1);
  ents[0].set_index(1);
  ents[0].set_term(1);
  ents[0].set_data("old");
  ASSERT_TRUE(s.Save(&hs, ents, true).ok());
  Options o = TestOptions({1, 2, 3});
  o.pre_vote = false;
  Core c(1, o, &s);
  while (c.role() != Role::kCandidate) c.Tick();
  pb::Message granted = Msg(pb::MSG_VOTE_RESP, 2, 1, c.term());
  ASSERT_TRUE(c.Step(granted).ok());
  ASSERT_EQ(c.role(), Role::kLeader);
  ASSERT_EQ(c.last_index(), 2u) << "the leader's no-op of its term";
  // A majority (leader + 2) holds index 1 from term 1: not committed.
  pb::Message ack = Msg(pb::MSG_APP_RESP, 2, 1, c.term());
  ack.set_index(1);
  ASSERT_TRUE(c.Step(ack).ok());
  EXPECT_EQ(c.commit(), 0u);
  // Once index 2 (current term) is on a majority, both commit.
  ack.set_index(2);
  ASSERT_TRUE(c.Step(ack).ok());
  EXPECT_EQ(c.commit(), 2u);
}

// §5.3: a follower rejects MsgApp whose previous entry does not match, and the
// hint lets the leader skip a whole conflicting term.
TEST(RaftPaper, RejectsMismatchWithConflictHint) {
  MemoryStorage s;
  std::vector<pb::Entry> ents;
  for (uint64_t i = 1; i <= 6; ++i) {
    pb::Entry e;
    e.set_index(i);
    e.set_term(i <= 2 ? 1 : 3);
    ents.push_back(e);
  }
  pb::HardState hs;
  hs.set_term(3);
  ASSERT_TRUE(s.Save(&hs, ents, true).ok());
  Core c(1, TestOptions({1, 2, 3}), &s);
  pb::Message app = Msg(pb::MSG_APP, 2, 1, 4);
  app.set_index(6);
  app.set_log_term(2);  // the leader has term 2 at index 6
  ASSERT_TRUE(c.Step(app).ok());
  Ready rd = c.GetReady();
  ASSERT_EQ(rd.messages.size(), 1u);
  const auto& resp = rd.messages[0];
  EXPECT_TRUE(resp.reject());
  EXPECT_EQ(resp.reject_hint(), 2u) << "last index with term <= 2";
  EXPECT_EQ(resp.reject_term(), 1u);
}

TEST(RaftReplication, EntriesArePersistedBeforeTheAcknowledgement) {
  Net net(3);
  net.Elect(1);
  ASSERT_TRUE(net[1].Propose("x").ok());
  Ready rd = net[1].GetReady();
  ASSERT_EQ(rd.entries.size(), 1u);
  EXPECT_TRUE(rd.must_sync);
  net[1].Advance(rd);
  for (auto& m : rd.messages) ASSERT_TRUE(net[m.to()].Step(m).ok());
  Ready frd = net[2].GetReady();
  ASSERT_EQ(frd.entries.size(), 1u) << "the follower's ack goes out in the same Ready";
  EXPECT_TRUE(frd.must_sync);
}

TEST(RaftReplication, ProposalsFailOnFollowers) {
  Net net(3);
  net.Elect(1);
  EXPECT_EQ(net[2].Propose("x").code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(net[1].Propose("x").ok());
}

// Flow control: in the replicate state at most max_inflight_msgs MsgApps are
// outstanding per follower, and each carries at most max_size_per_msg_bytes.
TEST(RaftFlowControl, InflightWindowAndMessageSizeAreBounded) {
  Options o;
  o.max_inflight_msgs = 2;
  o.max_size_per_msg_bytes = 250;
  Net net(2, o);
  net.Elect(1);
  net.sent.clear();
  net.Isolate(2);  // the follower stops answering
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(net[1].Propose(std::string(100, 'a' + i)).ok());
    net.Deliver();
  }
  EXPECT_EQ(net.Count(pb::MSG_APP, 2), 2);
  net.Heal();
  net.sent.clear();
  for (int i = 0; i < 3; ++i) net[1].Tick();  // heartbeat responses reopen the window
  net.Deliver();
  for (auto& m : net.sent) {
    if (m.type() != pb::MSG_APP) continue;
    uint64_t bytes = 0;
    for (auto& e : m.entries()) bytes += e.ByteSizeLong();
    EXPECT_TRUE(m.entries_size() <= 1 || bytes <= 250) << bytes;
  }
  EXPECT_EQ(net[2].last_index(), net[1].last_index());
}

// Thesis §6.4: ReadIndex confirms leadership with a heartbeat round carrying
// the request's context, and writes nothing to the log.
TEST(RaftReadIndex, ConfirmsLeadershipWithoutWritingTheLog) {
  Net net(3);
  net.Elect(1);
  const uint64_t last = net[1].last_index();
  net[1].ReadIndex("ctx-1");
  Ready rd = net[1].GetReady();
  EXPECT_TRUE(rd.read_states.empty()) << "not before a heartbeat quorum";
  EXPECT_TRUE(rd.entries.empty());
  int heartbeats = 0;
  for (auto& m : rd.messages) heartbeats += m.type() == pb::MSG_HEARTBEAT && m.context() == "ctx-1";
  EXPECT_EQ(heartbeats, 2);
  net[1].Advance(rd);
  for (auto& m : rd.messages) ASSERT_TRUE(net[m.to()].Step(m).ok());
  net.Deliver();
  ASSERT_EQ(net.read_states[1].size(), 1u);
  EXPECT_EQ(net.read_states[1][0].context, "ctx-1");
  EXPECT_EQ(net.read_states[1][0].index, net[1].commit());
  EXPECT_EQ(net[1].last_index(), last);
}

TEST(RaftReadIndex, IsolatedLeaderServesNoRead) {
  Net net(3);
  net.Elect(1);
  net.Isolate(1);
  net[1].ReadIndex("ctx");
  net.Deliver();
  EXPECT_TRUE(net.read_states[1].empty());
}

// Thesis §3.10: the leader brings the target up to date, then MsgTimeoutNow
// makes it campaign at once.
TEST(RaftTransfer, HandsLeadershipToTheTarget) {
  Net net(3);
  net.Elect(1);
  const uint64_t term = net[1].term();
  net[1].TransferLeadership(3);
  net.Deliver();
  EXPECT_EQ(net[3].role(), Role::kLeader);
  EXPECT_EQ(net[1].role(), Role::kFollower);
  EXPECT_GT(net[3].term(), term);
  EXPECT_EQ(net[1].leader(), 3u);
}

TEST(RaftTransfer, ProposalsAreRefusedDuringTransfer) {
  Net net(3);
  net.Elect(1);
  net.Isolate(3);
  net[1].TransferLeadership(3);
  EXPECT_EQ(net[1].Propose("x").code(), absl::StatusCode::kUnavailable);
}

// CheckQuorum: a leader that hears from no majority during a whole election
// timeout steps down (within two timeouts of the last contact).
TEST(RaftCheckQuorum, LeaderStepsDownWithoutQuorum) {
  Net net(3);
  net.Elect(1);
  net.Isolate(1);
  for (int i = 0; i < 20; ++i) {
    net[1].Tick();
    net.Deliver();
  }
  EXPECT_EQ(net[1].role(), Role::kFollower);
}

// PreVote (thesis §9.6): a partitioned node does not inflate its term, so it
// cannot depose the leader when it comes back.
TEST(RaftPreVote, RejoiningNodeDoesNotDisruptTheLeader) {
  Net net(3);
  net.Elect(1);
  const uint64_t term = net[1].term();
  net.Isolate(3);
  for (int i = 0; i < 100; ++i) {
    net[3].Tick();
    net.Deliver();
  }
  EXPECT_EQ(net[3].term(), term);
  net.Heal();
  for (int i = 0; i < 3; ++i) {
    net[1].Tick();
    net[3].Tick();
    net.Deliver();
  }
  EXPECT_EQ(net[1].role(), Role::kLeader);
  EXPECT_EQ(net[1].term(), term);
}

// §7: a follower whose needed entries were compacted gets the snapshot.
TEST(RaftSnapshot, LaggingFollowerReceivesSnapshot) {
  Net net(3);
  net.Elect(1);
  net.Isolate(3);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(net[1].Propose("v" + std::to_string(i)).ok());
  net.Deliver();
  const uint64_t commit = net[1].commit();
  ASSERT_GE(commit, 6u);
  ASSERT_TRUE(net.storage(1).CreateSnapshot(commit, net[1].conf_state(), "app-state").ok());
  net.Heal();
  net.sent.clear();
  for (int i = 0; i < 3; ++i) {
    net[1].Tick();
    net.Deliver();
  }
  EXPECT_EQ(net.Count(pb::MSG_SNAP, 3), 1);
  EXPECT_EQ(net.storage(3).GetSnapshot()->data(), "app-state");
  EXPECT_EQ(net[3].commit(), net[1].commit());
  EXPECT_EQ(net[3].last_index(), net[1].last_index());
}

TEST(RaftRestart, RestoresTermVoteAndLogFromStorage) {
  Net net(3);
  net.Elect(1);
  ASSERT_TRUE(net[1].Propose("x").ok());
  net.Deliver();
  Core restarted(2, TestOptions({1, 2, 3}), &net.storage(2));
  EXPECT_EQ(restarted.term(), net[2].term());
  EXPECT_EQ(restarted.vote(), net[2].vote());
  EXPECT_EQ(restarted.last_index(), net[2].last_index());
  EXPECT_EQ(restarted.role(), Role::kFollower);
}

TEST(RaftStep, RejectsMalformedMessages) {
  MemoryStorage s;
  Core c(1, TestOptions({1, 2, 3}), &s);
  EXPECT_EQ(c.Step(pb::Message()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Step(Msg(pb::MSG_APP, 0, 1, 1)).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ds::raft
