// 6.824 lab 2D scenarios: log compaction and InstallSnapshot. The applier
// snapshots every 10 entries (SnapShotInterval) and the persisted Raft state
// must stay under MAXLOGSIZE = 2000 bytes.
#include "tests/raft/sim/test_util.h"

namespace ds::raft::sim {
namespace {

constexpr uint64_t kSnapshotInterval = 10;
constexpr uint64_t kMaxLogSize = 2000;

void CrashNode(Cluster& c, int i) {
  c.Disconnect(i);
  c.Crash(i);
}
void RestartNode(Cluster& c, int i) {
  c.Restart(i);
  c.Connect(i);
}

void SnapCommon(bool disconnect, bool reliable, bool crash, uint64_t seed) {
  Cluster c(ScenarioOptions(3, seed, kSnapshotInterval));
  c.faults().reliable = reliable;
  SIM_ASSERT_OK(c.One(RandCommand(c), 3, true).status());
  int leader1;
  SIM_ASSIGN_OR_FAIL(leader1, c.CheckOneLeader());
  for (int i = 0; i < 30; ++i) {
    int victim = (leader1 + 1) % 3;
    int sender = leader1;
    if (i % 3 == 1) {
      sender = (leader1 + 1) % 3;
      victim = leader1;
    }
    if (disconnect) {
      c.Disconnect(victim);
      SIM_ASSERT_OK(c.One(RandCommand(c), 2, true).status());
    }
    if (crash) {
      CrashNode(c, victim);
      SIM_ASSERT_OK(c.One(RandCommand(c), 2, true).status());
    }
    // Enough entries to trigger a snapshot.
    const uint64_t nn = kSnapshotInterval / 2 + c.rng().Uniform(kSnapshotInterval);
    for (uint64_t j = 0; j < nn; ++j) c.Start(sender, RandCommand(c));
    // Without a fault the followers catch up without InstallSnapshot.
    SIM_ASSERT_OK(c.One(RandCommand(c), disconnect || crash ? 2 : 3, true).status());
    ASSERT_LT(c.LogSize(), kMaxLogSize) << "Log size too large";
    if (disconnect) {
      // The victim may need InstallSnapshot.
      c.Connect(victim);
      SIM_ASSERT_OK(c.One(RandCommand(c), 3, true).status());
      SIM_ASSIGN_OR_FAIL(leader1, c.CheckOneLeader());
    }
    if (crash) {
      RestartNode(c, victim);
      SIM_ASSERT_OK(c.One(RandCommand(c), 3, true).status());
      SIM_ASSIGN_OR_FAIL(leader1, c.CheckOneLeader());
    }
  }
  EXPECT_GT(c.SnapshotSize(), 0u);
  // (Without faults a snapshot may still be sent: a reordered MsgApp makes a
  // follower reject while the leader has already compacted.)
  if (disconnect || crash) {
    EXPECT_GT(c.snapshots_installed(), 0u) << "no lagging follower needed InstallSnapshot";
  }
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2D, SnapshotBasic) { SnapCommon(false, true, false, 31); }
TEST(Raft2D, SnapshotInstall) { SnapCommon(true, true, false, 32); }
TEST(Raft2D, SnapshotInstallUnreliable) { SnapCommon(true, false, false, 33); }
TEST(Raft2D, SnapshotInstallCrash) { SnapCommon(false, true, true, 34); }
TEST(Raft2D, SnapshotInstallUnCrash) { SnapCommon(false, false, true, 35); }

// Crash and restart all servers: they must come back from snapshot + log tail
// without losing or reusing indexes.
TEST(Raft2D, SnapshotAllCrash) {
  Cluster c(ScenarioOptions(3, 36, kSnapshotInterval));
  SIM_ASSERT_OK(c.One(RandCommand(c), 3, true).status());
  for (int i = 0; i < 5; ++i) {
    const uint64_t nn = kSnapshotInterval / 2 + c.rng().Uniform(kSnapshotInterval);
    for (uint64_t j = 0; j < nn; ++j) SIM_ASSERT_OK(c.One(RandCommand(c), 3, true).status());
    uint64_t index1;
    SIM_ASSIGN_OR_FAIL(index1, c.One(RandCommand(c), 3, true));
    for (int k = 0; k < 3; ++k) CrashNode(c, k);
    for (int k = 0; k < 3; ++k) RestartNode(c, k);
    uint64_t index2;
    SIM_ASSIGN_OR_FAIL(index2, c.One(RandCommand(c), 3, true));
    ASSERT_GE(index2, index1 + 1) << "index decreased";
  }
  SIM_ASSERT_OK(c.status());
}

// A restarted server must load its snapshot, so what it persists next does
// not lose the compacted prefix (the second restart would expose it).
TEST(Raft2D, SnapshotInit) {
  Cluster c(ScenarioOptions(3, 37, kSnapshotInterval));
  SIM_ASSERT_OK(c.One(RandCommand(c), 3, true).status());
  for (int i = 0; i < 11; ++i) SIM_ASSERT_OK(c.One(RandCommand(c), 3, true).status());
  for (int k = 0; k < 3; ++k) CrashNode(c, k);
  for (int k = 0; k < 3; ++k) RestartNode(c, k);
  SIM_ASSERT_OK(c.One(RandCommand(c), 3, true).status());
  for (int k = 0; k < 3; ++k) CrashNode(c, k);
  for (int k = 0; k < 3; ++k) RestartNode(c, k);
  SIM_ASSERT_OK(c.One(RandCommand(c), 3, true).status());
  EXPECT_GT(c.SnapshotSize(), 0u);
  SIM_ASSERT_OK(c.status());
}

}  // namespace
}  // namespace ds::raft::sim
