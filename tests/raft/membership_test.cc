// Membership changes in the Core (thesis §4.1-§4.2, learners as etcd's), one
// rule per test, on a tiny synchronous network: messages are delivered in
// order until the network is quiet.
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "raft/core/core.h"
#include "raft/storage/memory_storage.h"

namespace ds::raft {
namespace {

class Net {
 public:
  // Nodes 1..voters bootstrap the cluster; nodes voters+1..total start
  // outside it (an empty configuration: --initial-cluster-state=existing).
  Net(int voters, int total, Options base = Options()) : base_(base) {
    for (int i = 1; i <= voters; ++i) base_.peers.push_back(i);
    for (uint64_t id = 1; id <= static_cast<uint64_t>(total); ++id) {
      storage_[id] = std::make_unique<MemoryStorage>();
      joiner_[id] = id > static_cast<uint64_t>(voters);
      Restart(id);
    }
  }
  Core& operator[](uint64_t id) { return *cores_[id]; }
  MemoryStorage& storage(uint64_t id) { return *storage_[id]; }
  void Restart(uint64_t id) {
    Options o = base_;
    if (joiner_[id]) o.peers.clear();
    o.seed = id;
    cores_[id] = std::make_unique<Core>(id, o, storage_[id].get());
  }
  void Isolate(uint64_t id) { isolated_.insert(id); }
  void Heal() { isolated_.clear(); }
  std::set<pb::MessageType> drop;
  std::vector<pb::Message> sent;

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
          core->Advance(rd);
        }
      }
      if (msgs.empty()) return;
      for (auto& m : msgs) {
        sent.push_back(m);
        if (drop.count(m.type()) || isolated_.count(m.from()) || isolated_.count(m.to())) continue;
        if (!cores_.count(m.to())) continue;
        ASSERT_TRUE(cores_[m.to()]->Step(m).ok());
      }
    }
    FAIL() << "network never became quiet";
  }
  void Elect(uint64_t id) {
    for (int i = 0; i < 100 && cores_[id]->role() == Role::kFollower; ++i) cores_[id]->Tick();
    Deliver();
  }
  // Ticks every node `n` times, delivering after each tick.
  void TickAll(int n) {
    for (int i = 0; i < n; ++i) {
      for (auto& [id, core] : cores_) {
        if (!isolated_.count(id)) core->Tick();
      }
      Deliver();
    }
  }
  void Propose(uint64_t id, const std::string& data) {
    ASSERT_TRUE(cores_[id]->Propose(data).ok());
    Deliver();
  }
  absl::StatusOr<uint64_t> Change(uint64_t leader, pb::ConfChangeType type, uint64_t node,
                                  const std::string& address = "") {
    pb::ConfChange cc;
    cc.set_type(type);
    cc.set_node_id(node);
    cc.set_address(address);
    absl::StatusOr<uint64_t> r = cores_[leader]->ProposeConfChange(cc);
    Deliver();
    return r;
  }
  int Count(pb::MessageType t, uint64_t from) const {
    int n = 0;
    for (auto& m : sent) n += m.type() == t && m.from() == from;
    return n;
  }

 private:
  Options base_;
  std::map<uint64_t, std::unique_ptr<MemoryStorage>> storage_;
  std::map<uint64_t, std::unique_ptr<Core>> cores_;
  std::map<uint64_t, bool> joiner_;
  std::set<uint64_t> isolated_;
};

std::vector<uint64_t> Voters(const Core& c) {
  return {c.conf_state().voters().begin(), c.conf_state().voters().end()};
}
std::vector<uint64_t> Learners(const Core& c) {
  return {c.conf_state().learners().begin(), c.conf_state().learners().end()};
}

TEST(Membership, JoinerWithoutConfigurationNeverCampaigns) {
  Net net(3, 4);
  EXPECT_TRUE(net[4].conf_state().voters().empty());
  for (int i = 0; i < 100; ++i) net[4].Tick();
  net.Deliver();
  EXPECT_EQ(net.Count(pb::MSG_PRE_VOTE, 4) + net.Count(pb::MSG_VOTE, 4), 0);
  EXPECT_EQ(net[4].role(), Role::kFollower);
}

TEST(Membership, LearnerReceivesTheLogButNeitherVotesNorCounts) {
  Net net(3, 4);
  net.Elect(1);
  ASSERT_EQ(net[1].role(), Role::kLeader);
  net.Propose(1, "a");
  auto index = net.Change(1, pb::CONF_ADD_LEARNER, 4, "127.0.0.1:4");
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(net[1].commit(), *index);
  EXPECT_EQ(Learners(net[4]), std::vector<uint64_t>{4});
  EXPECT_EQ(net[4].conf_state().addresses().at(4), "127.0.0.1:4");
  EXPECT_EQ(net[4].last_index(), net[1].last_index());
  EXPECT_EQ(net[4].commit(), net[1].commit());

  // Two voters down: the learner's acknowledgement does not make a majority.
  net.Isolate(2);
  net.Isolate(3);
  ASSERT_TRUE(net[1].Propose("b").ok());
  net.Deliver();
  EXPECT_EQ(net[4].last_index(), net[1].last_index());
  EXPECT_LT(net[1].commit(), net[1].last_index());
  // A learner never campaigns, even without a leader.
  net.Heal();
  net.Isolate(1);
  const size_t before = net.sent.size();
  for (int i = 0; i < 100; ++i) net[4].Tick();
  net.Deliver();
  for (size_t k = before; k < net.sent.size(); ++k) {
    EXPECT_NE(net.sent[k].from(), 4u) << pb::MessageType_Name(net.sent[k].type());
  }
}

TEST(Membership, PromotedLearnerCountsForCommit) {
  Net net(3, 4);
  net.Elect(1);
  ASSERT_TRUE(net.Change(1, pb::CONF_ADD_LEARNER, 4).ok());
  auto index = net.Change(1, pb::CONF_PROMOTE, 4);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(net[1].commit(), *index);
  EXPECT_EQ(Voters(net[1]), (std::vector<uint64_t>{1, 2, 3, 4}));
  EXPECT_TRUE(Learners(net[1]).empty());
  // Four voters: 1 and 4 alone are not a majority; 1, 2 and 4 are.
  net.Isolate(2);
  net.Isolate(3);
  ASSERT_TRUE(net[1].Propose("x").ok());
  net.Deliver();
  EXPECT_LT(net[1].commit(), net[1].last_index());
  net.Heal();
  net.Isolate(3);
  net.TickAll(2);
  EXPECT_EQ(net[1].commit(), net[1].last_index());
}

TEST(Membership, InvalidChangesAreRefusedWithoutEffect) {
  Options o;
  o.max_learner_lag = 0;
  Net net(1, 3, o);
  net.Elect(1);
  ASSERT_EQ(net[1].role(), Role::kLeader);
  const uint64_t last = net[1].last_index();
  EXPECT_EQ(net.Change(1, pb::CONF_ADD_VOTER, 1).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(net.Change(1, pb::CONF_PROMOTE, 2).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(net.Change(1, pb::CONF_REMOVE, 3).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(net.Change(1, pb::CONF_REMOVE, 1).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(net.Change(1, pb::CONF_ADD_LEARNER, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(net[1].last_index(), last);
  // A learner that is not caught up is not promoted.
  net.Isolate(2);
  ASSERT_TRUE(net.Change(1, pb::CONF_ADD_LEARNER, 2).ok());
  EXPECT_EQ(net.Change(1, pb::CONF_ADD_LEARNER, 2).status().code(),
            absl::StatusCode::kAlreadyExists);
  auto promote = net.Change(1, pb::CONF_PROMOTE, 2);
  EXPECT_EQ(promote.status().code(), absl::StatusCode::kFailedPrecondition) << promote.status();
  net.Heal();
  net.TickAll(2);
  EXPECT_TRUE(net.Change(1, pb::CONF_PROMOTE, 2).ok());
  // Followers refuse: only the leader changes the configuration.
  EXPECT_EQ(net.Change(2, pb::CONF_ADD_LEARNER, 3).status().code(), absl::StatusCode::kUnavailable);
}

TEST(Membership, OneUncommittedChangeAtATime) {
  Net net(3, 5);
  net.Elect(1);
  net.Isolate(2);
  net.Isolate(3);
  ASSERT_TRUE(net.Change(1, pb::CONF_ADD_LEARNER, 4).ok());
  EXPECT_LT(net[1].commit(), net[1].conf_index());
  auto second = net.Change(1, pb::CONF_ADD_LEARNER, 5);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  net.Heal();
  net.TickAll(2);
  EXPECT_EQ(net[1].commit(), net[1].last_index());
  EXPECT_TRUE(net.Change(1, pb::CONF_ADD_LEARNER, 5).ok());
}

// Ongaro's 2015 fix to single-server changes: a new leader must commit an
// entry of its own term before it appends a configuration change.
TEST(Membership, NoChangeBeforeTheLeaderCommitsInItsTerm) {
  Net net(3, 4);
  net.drop.insert(pb::MSG_APP_RESP);
  net.Elect(1);
  ASSERT_EQ(net[1].role(), Role::kLeader);
  EXPECT_LT(net[1].commit(), net[1].last_index());
  auto r = net.Change(1, pb::CONF_ADD_LEARNER, 4);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  net.drop.clear();
  net.TickAll(2);
  EXPECT_TRUE(net.Change(1, pb::CONF_ADD_LEARNER, 4).ok());
}

// A replica uses the newest configuration in its log, committed or not, and
// falls back to the previous one when a new leader overwrites that entry.
TEST(Membership, EntryOnlyTheOldLeaderHadIsTruncatedAndTheOldConfigurationReturns) {
  Net net(3, 4);
  net.Elect(1);
  net.TickAll(1);
  // 1 appends the change but nobody receives it.
  net.Isolate(1);
  ASSERT_TRUE(net.Change(1, pb::CONF_ADD_VOTER, 4).ok());
  EXPECT_EQ(Voters(net[1]), (std::vector<uint64_t>{1, 2, 3, 4}));
  const uint64_t stale = net[1].conf_index();
  // 2 or 3 is elected and commits its own entries at the same index.
  net.TickAll(50);
  const uint64_t leader = net[2].role() == Role::kLeader ? 2 : 3;
  ASSERT_EQ(net[leader].role(), Role::kLeader);
  net.Propose(leader, "overwrites");
  net.Propose(leader, "more");
  // 1 rejoins: its configuration entry is replaced, the old one applies.
  net.Heal();
  net.TickAll(3);
  EXPECT_EQ(net[1].role(), Role::kFollower);
  EXPECT_EQ(net[1].last_index(), net[leader].last_index());
  EXPECT_EQ(Voters(net[1]), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_TRUE(net[1].conf_index() == 0 || net[1].conf_index() != stale);
}

TEST(Membership, RemovedLeaderStepsDownOnceTheRemovalCommits) {
  Net net(3, 3);
  net.Elect(1);
  net.TickAll(1);
  // While the removal is not committed, 1 still leads (without counting itself).
  net.drop.insert(pb::MSG_APP_RESP);
  ASSERT_TRUE(net.Change(1, pb::CONF_REMOVE, 1).ok());
  EXPECT_EQ(net[1].role(), Role::kLeader);
  EXPECT_FALSE(net[1].IsVoter(1));
  net.drop.clear();
  net.TickAll(1);
  // Committed: 1 steps down and hands over to an up-to-date voter at once.
  EXPECT_NE(net[1].role(), Role::kLeader);
  EXPECT_GE(net.Count(pb::MSG_TIMEOUT_NOW, 1), 1);
  uint64_t leader = 0;
  for (uint64_t id : {2u, 3u}) {
    if (net[id].role() == Role::kLeader) leader = id;
  }
  ASSERT_NE(leader, 0u);
  EXPECT_EQ(Voters(net[leader]), (std::vector<uint64_t>{2, 3}));
  // The removed replica never campaigns again.
  const size_t before = net.sent.size();
  net.Isolate(leader);
  for (int i = 0; i < 100; ++i) net[1].Tick();
  net.Deliver();
  for (size_t k = before; k < net.sent.size(); ++k) {
    EXPECT_NE(net.sent[k].from(), 1u) << pb::MessageType_Name(net.sent[k].type());
  }
}

// Thesis Figure 4.6: a voter whose removal is in its log but not committed may
// be the only one able to commit it, so it still campaigns.
TEST(Membership, VoterWithUncommittedRemovalStillCampaigns) {
  Net net(2, 2);
  net.Elect(1);
  net.TickAll(1);
  // 1 removes itself; 2 receives the entry but 1 never learns it committed.
  net.drop.insert(pb::MSG_APP_RESP);
  ASSERT_TRUE(net.Change(1, pb::CONF_REMOVE, 1).ok());
  EXPECT_EQ(Voters(net[2]), std::vector<uint64_t>{2});
  // 2 sole voter in its newest configuration: it campaigns and wins alone.
  net.drop.clear();
  net.Isolate(1);
  net.Elect(2);
  EXPECT_EQ(net[2].role(), Role::kLeader);
}

TEST(Membership, ConfigurationSurvivesRestartFromLogAndSnapshot) {
  Net net(3, 4);
  net.Elect(1);
  ASSERT_TRUE(net.Change(1, pb::CONF_ADD_LEARNER, 4, "h:4").ok());
  net.Propose(1, "after");
  // Node 2 compacts its log up to the last entry: the configuration now comes
  // from the snapshot's metadata.
  const uint64_t at = net[2].commit();
  ASSERT_TRUE(net.storage(2).CreateSnapshot(at, net[2].ConfStateAt(at), "state").ok());
  net.Restart(2);
  EXPECT_EQ(Voters(net[2]), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(Learners(net[2]), std::vector<uint64_t>{4});
  EXPECT_EQ(net[2].conf_state().addresses().at(4), "h:4");
  // Node 3 restarts from its log (the configuration entry is in it).
  net.Restart(3);
  EXPECT_EQ(Learners(net[3]), std::vector<uint64_t>{4});
  // And the joiner restarts knowing it is a learner.
  net.Restart(4);
  EXPECT_EQ(Learners(net[4]), std::vector<uint64_t>{4});
}

TEST(Membership, NewMemberCatchesUpBySnapshotAndLearnsTheConfiguration) {
  Net net(3, 4);
  net.Elect(1);
  for (int i = 0; i < 5; ++i) net.Propose(1, "v" + std::to_string(i));
  // Every voter compacts: the new member can only get a snapshot.
  const uint64_t at = net[1].commit();
  for (uint64_t id : {1u, 2u, 3u}) {
    ASSERT_TRUE(net.storage(id).CreateSnapshot(at, net[id].ConfStateAt(at), "state").ok());
  }
  ASSERT_TRUE(net.Change(1, pb::CONF_ADD_LEARNER, 4).ok());
  net.TickAll(3);
  EXPECT_GE(net.Count(pb::MSG_SNAP, 1), 1);
  EXPECT_EQ(net[4].last_index(), net[1].last_index());
  EXPECT_EQ(Voters(net[4]), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(Learners(net[4]), std::vector<uint64_t>{4});
  // Promoted, it can lead.
  ASSERT_TRUE(net.Change(1, pb::CONF_PROMOTE, 4).ok());
  net[1].TransferLeadership(4);
  net.Deliver();
  EXPECT_EQ(net[4].role(), Role::kLeader);
}

TEST(Membership, RemovedIdsAreNeverReused) {
  Net net(3, 4);
  net.Elect(1);
  ASSERT_TRUE(net.Change(1, pb::CONF_ADD_LEARNER, 4).ok());
  ASSERT_TRUE(net.Change(1, pb::CONF_REMOVE, 4).ok());
  EXPECT_EQ(net[1].conf_state().removed_size(), 1);
  auto again = net.Change(1, pb::CONF_ADD_LEARNER, 4);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition) << again.status();
  EXPECT_TRUE(Learners(net[1]).empty());
}

TEST(Membership, LeadershipIsNotTransferredToALearner) {
  Net net(3, 4);
  net.Elect(1);
  ASSERT_TRUE(net.Change(1, pb::CONF_ADD_LEARNER, 4).ok());
  net[1].TransferLeadership(4);
  net.Deliver();
  EXPECT_EQ(net.Count(pb::MSG_TIMEOUT_NOW, 1), 0);
  EXPECT_EQ(net[1].role(), Role::kLeader);
}

}  // namespace
}  // namespace ds::raft
