// Three Raft Nodes over real gRPC on loopback with RocksDB storage: election,
// replication, leader failure and re-election, and catching a lagging node up
// with a multi-MiB InstallSnapshot after the log was compacted past it.
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/raft/grpc_cluster.h"
#include "tests/raft/storage_test_util.h"

namespace ds::raft {
namespace {

using testing_util::GrpcCluster;
using testing_util::GrpcClusterOptions;
using testing_util::TempDir;

constexpr absl::Duration kTimeout = absl::Seconds(15);

std::string Command(int i, size_t bytes) {
  std::string s = "cmd-" + std::to_string(i) + ";";
  s.resize(bytes, static_cast<char>('a' + i % 26));
  return s;
}

// Waits until every running node applied `index` and all hold the same state.
void ExpectConverged(GrpcCluster& c, uint64_t index) {
  std::string reference;
  bool first = true;
  for (uint64_t id : c.ids()) {
    if (!c.running(id)) continue;
    ASSERT_TRUE(c.app(id)->WaitApplied(index, kTimeout).has_value()) << "node " << id;
    // No command is proposed meanwhile (a new leader's no-op has no data), so
    // every replica's state must be the same string.
    std::string state = c.app(id)->Capture().second;
    if (first) reference = state, first = false;
    EXPECT_EQ(state, reference) << "node " << id << " diverged";
  }
}

TEST(RaftGrpcCluster, ElectsReplicatesSurvivesLeaderLossAndCatchesUpBySnapshot) {
  TempDir dir;
  auto cluster = GrpcCluster::Create(dir.path(), {});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  GrpcCluster& c = **cluster;

  // Election, then replication to everyone.
  const uint64_t leader = c.WaitForLeader(kTimeout);
  ASSERT_NE(leader, 0u);
  uint64_t last = 0;
  for (int i = 0; i < 30; ++i) {
    auto p = c.ProposeCommitted(Command(i, 100), kTimeout);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_GT(p->index, last);
    last = p->index;
  }
  for (uint64_t id : c.ids()) {
    ASSERT_TRUE(c.app(id)->WaitApplied(last, kTimeout).has_value()) << "node " << id;
  }

  // A non-leader refuses proposals and names the leader.
  const uint64_t follower = leader % 3 + 1;
  auto refused = c.node(follower)->Propose("x");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  const uint64_t hint = LeaderHint(refused.status());
  EXPECT_TRUE(hint == 0 || hint == leader || c.node(hint)->GetStatus().term > 0);

  // The leader dies: the other two elect a new one and keep committing.
  c.StopNode(leader);
  const uint64_t leader2 = c.WaitForLeader(kTimeout);
  ASSERT_NE(leader2, 0u);
  ASSERT_NE(leader2, leader);
  for (int i = 30; i < 60; ++i) {
    auto p = c.ProposeCommitted(Command(i, 100), kTimeout);
    ASSERT_TRUE(p.ok()) << p.status();
    last = p->index;
  }

  // Grow the state past several snapshot chunks (1 MiB) while the old leader
  // is down, then compact every live log past what it holds.
  for (int i = 60; i < 100; ++i) {
    auto p = c.ProposeCommitted(Command(i, 64 << 10), kTimeout);
    ASSERT_TRUE(p.ok()) << p.status();
    last = p->index;
  }
  for (uint64_t id : c.ids()) {
    if (!c.running(id)) continue;
    ASSERT_TRUE(c.node(id)->WaitForApplied(last, kTimeout));
    auto [index, state] = c.app(id)->Capture();
    ASSERT_GE(index, last);
    ASSERT_GT(state.size(), 2u << 20);
    ASSERT_TRUE(c.node(id)->WaitForApplied(index, kTimeout));
    ASSERT_TRUE(c.node(id)->Snapshot(index, state).ok());
    EXPECT_GT(c.node(id)->GetStatus().snapshot_index, 0u);
  }

  // The old leader comes back: its log ends long before the leader's first
  // entry, so only InstallSnapshot can catch it up.
  ASSERT_TRUE(c.StartNode(leader).ok());
  auto p = c.ProposeCommitted(Command(100, 100), kTimeout);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(c.app(leader)->WaitApplied(p->index, kTimeout).has_value());
  EXPECT_GE(c.app(leader)->restores(), 1) << "caught up without a snapshot";
  ExpectConverged(c, p->index);
  const NodeStatus st = c.node(leader)->GetStatus();
  EXPECT_GE(st.snapshot_index, last);
  EXPECT_EQ(st.role, Role::kFollower);
}

TEST(RaftGrpcCluster, ReadIndexTransferLeadershipAndSnapshotRules) {
  TempDir dir;
  auto cluster = GrpcCluster::Create(dir.path(), {});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  GrpcCluster& c = **cluster;
  uint64_t last = 0;
  for (int i = 0; i < 5; ++i) {
    auto p = c.ProposeCommitted(Command(i, 50), kTimeout);
    ASSERT_TRUE(p.ok()) << p.status();
    last = p->index;
  }
  const uint64_t leader = c.WaitForLeader(kTimeout);
  ASSERT_NE(leader, 0u);

  // §6.4: a read point covers every write committed before the read began,
  // and the call returns once the local state machine has applied it.
  auto read = c.node(leader)->ReadIndex(kTimeout);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_GE(*read, last);
  EXPECT_GE(c.app(leader)->applied(), *read);
  // Followers do not serve reads; they point at the leader.
  const uint64_t follower = leader % 3 + 1;
  auto follower_read = c.node(follower)->ReadIndex(kTimeout);
  ASSERT_EQ(follower_read.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(LeaderHint(follower_read.status()), leader);

  // A snapshot cannot be taken beyond what the application applied.
  EXPECT_EQ(c.node(leader)->Snapshot(c.node(leader)->GetStatus().last_index + 10, "x").code(),
            absl::StatusCode::kFailedPrecondition);

  // Leadership moves to the named follower (thesis §3.10). The request is
  // repeated to whoever leads, in case a slow machine caused an election.
  const absl::Time deadline = absl::Now() + kTimeout;
  while (c.node(follower)->GetStatus().role != Role::kLeader && absl::Now() < deadline) {
    const uint64_t current = c.WaitForLeader(kTimeout);
    if (current != 0 && current != follower) c.node(current)->TransferLeadership(follower);
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(c.node(follower)->GetStatus().role, Role::kLeader);
  auto p = c.ProposeCommitted(Command(99, 50), kTimeout);
  ASSERT_TRUE(p.ok()) << p.status();

  // A stopped node refuses work instead of hanging.
  c.node(leader)->Stop();
  EXPECT_EQ(c.node(leader)->Propose("late").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(c.node(leader)->ReadIndex(kTimeout).status().code(), absl::StatusCode::kUnavailable);
}

TEST(RaftGrpcCluster, RestartedNodeRestoresItsOwnSnapshotThenReplaysItsLog) {
  TempDir dir;
  auto cluster = GrpcCluster::Create(dir.path(), {});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  GrpcCluster& c = **cluster;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(c.ProposeCommitted(Command(i, 200), kTimeout).ok());
  const uint64_t leader = c.WaitForLeader(kTimeout);
  ASSERT_NE(leader, 0u);
  const uint64_t victim = leader % 3 + 1;
  auto [index, state] = c.app(victim)->Capture();
  ASSERT_TRUE(c.node(victim)->WaitForApplied(index, kTimeout));
  ASSERT_TRUE(c.node(victim)->Snapshot(index, state).ok());
  uint64_t last = 0;
  for (int i = 20; i < 30; ++i) {
    auto p = c.ProposeCommitted(Command(i, 200), kTimeout);
    ASSERT_TRUE(p.ok()) << p.status();
    last = p->index;
  }
  ASSERT_TRUE(c.app(victim)->WaitApplied(last, kTimeout).has_value());

  // Crash-restart: the application state is rebuilt from the local snapshot
  // plus the log after it, with no help from the leader's snapshot.
  c.StopNode(victim);
  ASSERT_TRUE(c.StartNode(victim).ok());
  ASSERT_TRUE(c.app(victim)->WaitApplied(last, kTimeout).has_value());
  EXPECT_EQ(c.app(victim)->restores(), 1);
  EXPECT_EQ(c.node(victim)->GetStatus().snapshot_index, index);
  ExpectConverged(c, last);
}

// A snapshot leaves the last LogRetention entries in the log: a follower that
// fell fewer entries behind catches up from the log, without InstallSnapshot;
// a node restarted over such a log restores its own snapshot and applies only
// what follows it (the kept entries are inside the snapshot: applying them
// again would make its state diverge).
TEST(RaftGrpcCluster, SnapshotsKeepALogTailForFollowersALittleBehind) {
  TempDir dir;
  GrpcClusterOptions options;
  options.log_retention = {50, 1 << 20};
  auto cluster = GrpcCluster::Create(dir.path(), options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  GrpcCluster& c = **cluster;
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(c.ProposeCommitted(Command(i, 100), kTimeout).ok());
  const uint64_t leader = c.WaitForLeader(kTimeout);
  ASSERT_NE(leader, 0u);
  const uint64_t lagger = leader % 3 + 1;
  c.StopNode(lagger);
  uint64_t last = 0;
  for (int i = 40; i < 70; ++i) {
    auto p = c.ProposeCommitted(Command(i, 100), kTimeout);
    ASSERT_TRUE(p.ok()) << p.status();
    last = p->index;
  }
  for (uint64_t id : c.ids()) {
    if (!c.running(id)) continue;
    ASSERT_TRUE(c.node(id)->WaitForApplied(last, kTimeout));
    auto [index, state] = c.app(id)->Capture();
    // The Node counts an entry applied once the callback returned.
    ASSERT_TRUE(c.node(id)->WaitForApplied(index, kTimeout));
    ASSERT_TRUE(c.node(id)->Snapshot(index, state).ok());
    const NodeStatus st = c.node(id)->GetStatus();
    EXPECT_EQ(st.snapshot_index, index);
    EXPECT_EQ(st.first_index, index - 49) << "node " << id << " kept the wrong log tail";
  }

  ASSERT_TRUE(c.StartNode(lagger).ok());
  auto p = c.ProposeCommitted(Command(70, 100), kTimeout);
  ASSERT_TRUE(p.ok()) << p.status();
  last = p->index;
  ASSERT_TRUE(c.app(lagger)->WaitApplied(last, kTimeout).has_value());
  EXPECT_EQ(c.app(lagger)->restores(), 0) << "caught up by snapshot although the log was kept";
  ExpectConverged(c, last);

  // The lagger snapshots (keeping entries below) and restarts.
  auto [index, state] = c.app(lagger)->Capture();
  ASSERT_TRUE(c.node(lagger)->WaitForApplied(index, kTimeout));
  ASSERT_TRUE(c.node(lagger)->Snapshot(index, state).ok());
  ASSERT_LT(c.node(lagger)->GetStatus().first_index, index);
  c.StopNode(lagger);
  ASSERT_TRUE(c.StartNode(lagger).ok());
  p = c.ProposeCommitted(Command(71, 100), kTimeout);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(c.app(lagger)->WaitApplied(p->index, kTimeout).has_value());
  EXPECT_EQ(c.app(lagger)->restores(), 1);
  ExpectConverged(c, p->index);
}

// Membership over real gRPC: a node the others never heard of is added as a
// learner (they learn its address from the configuration), catches up by
// InstallSnapshot, is promoted, and then the leader removes itself.
TEST(RaftGrpcCluster, MembersAreAddedPromotedAndRemovedThroughTheLog) {
  TempDir dir;
  auto cluster = GrpcCluster::Create(dir.path(), {});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  GrpcCluster& c = **cluster;
  uint64_t last = 0;
  for (int i = 0; i < 20; ++i) {
    auto p = c.ProposeCommitted(Command(i, 1000), kTimeout);
    ASSERT_TRUE(p.ok()) << p.status();
    last = p->index;
  }
  // Every node compacts: the newcomer can only catch up by snapshot.
  for (uint64_t id : c.ids()) {
    ASSERT_TRUE(c.app(id)->WaitApplied(last, kTimeout).has_value());
    auto [index, state] = c.app(id)->Capture();
    ASSERT_TRUE(c.node(id)->Snapshot(index, state).ok());
  }
  ASSERT_TRUE(c.AddNode(4).ok());
  EXPECT_TRUE(c.node(4)->GetStatus().conf->voters().empty());
  ASSERT_TRUE(c.ChangeMembership(pb::CONF_ADD_LEARNER, 4, kTimeout).ok());
  auto p = c.ProposeCommitted("after-add", kTimeout);
  ASSERT_TRUE(p.ok()) << p.status();
  ExpectConverged(c, p->index);
  EXPECT_GE(c.app(4)->restores(), 1);
  NodeStatus st4 = c.node(4)->GetStatus();
  ASSERT_EQ(st4.conf->learners_size(), 1);
  EXPECT_EQ(st4.conf->learners(0), 4u);
  EXPECT_EQ(st4.conf->addresses().at(4), c.address(4));

  ASSERT_TRUE(c.ChangeMembership(pb::CONF_PROMOTE, 4, kTimeout).ok());
  const uint64_t old_leader = c.WaitForLeader(kTimeout);
  ASSERT_NE(old_leader, 0u);
  ASSERT_TRUE(c.ChangeMembership(pb::CONF_REMOVE, old_leader, kTimeout).ok());
  // The removed leader steps down; the others elect one of themselves.
  const absl::Time deadline = absl::Now() + kTimeout;
  uint64_t leader = 0;
  while (absl::Now() < deadline && (leader == 0 || leader == old_leader)) {
    absl::SleepFor(absl::Milliseconds(10));
    leader = c.WaitForLeader(kTimeout);
  }
  ASSERT_NE(leader, old_leader);
  c.StopNode(old_leader);
  auto q = c.ProposeCommitted("after-remove", kTimeout);
  ASSERT_TRUE(q.ok()) << q.status();
  ExpectConverged(c, q->index);
  for (uint64_t id : c.ids()) {
    if (!c.running(id)) continue;
    const pb::ConfState& conf = *c.node(id)->GetStatus().conf;
    EXPECT_EQ(conf.voters_size(), 3) << "node " << id;
    EXPECT_EQ(conf.learners_size(), 0) << "node " << id;
  }
}

}  // namespace
}  // namespace ds::raft
