// kvraft's state machine with its state on disk (SessionStateMachine over
// DiskState) against the same state machine in memory, fed the same log:
// every result equal, the same state after crashes that lose the unwritten
// batch (the replica replays the log from the applied index on disk), after
// a checkpoint restored on another replica, and after the upgrade from an
// in-memory snapshot.
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "gtest/gtest.h"
#include "kvraft/kv_state_machine.h"
#include "raft/rsm/disk_state.h"
#include "raft/rsm/session_state_machine.h"
#include "tests/common/temp_dir.h"

namespace ds::kv {
namespace {

using ::ds::testing::TempDir;

// A log of session commands: Puts, Appends (not idempotent: applying one twice
// shows), Deletes, retries of earlier commands, and empty entries (a new
// leader's no-op), with a clock that moves on and sometimes expires sessions.
std::vector<std::string> MakeLog(int entries, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::string> log;
  std::vector<uint64_t> next_seq(6, 1);
  std::vector<std::string> last(6);
  int64_t clock = 1'000'000;
  for (int i = 0; i < entries; ++i) {
    clock += rng() % 200'000;
    const uint32_t r = rng() % 100;
    if (r < 3) {
      log.emplace_back();
      continue;
    }
    const uint64_t client = 1 + rng() % 5;
    if (r < 13 && !last[client].empty()) {
      log.push_back(last[client]);  // a retry
      continue;
    }
    pb::KvCommand cmd;
    const uint32_t op = rng() % 10;
    cmd.set_op(op < 4 ? pb::OP_APPEND : op < 8 ? pb::OP_PUT : pb::OP_DELETE);
    cmd.set_key(absl::StrCat("key-", rng() % 40));
    cmd.set_value(absl::StrCat("v", i, ";"));
    rsm::pb::SessionRef ref = rsm::MakeSessionRef(client, 1000 + client, next_seq[client]++);
    last[client] = rsm::EncodeCommand(&ref, cmd.SerializeAsString(), clock);
    log.push_back(last[client]);
  }
  return log;
}

struct MemoryReplica {
  explicit MemoryReplica(rsm::SessionOptions o) : sm(&kv, o) {}
  KvStateMachine kv;
  rsm::SessionStateMachine sm;
};

struct DiskReplica {
  DiskReplica(const std::string& dir, rsm::SessionOptions o) {
    auto opened = rsm::DiskState::Open({.dir = dir, .memtable_bytes = 1 << 20});
    EXPECT_TRUE(opened.ok()) << opened.status();
    disk = std::move(*opened);
    sm = std::make_unique<rsm::SessionStateMachine>(&kv, o, disk.get());
    EXPECT_TRUE(sm->Open().ok());
  }
  KvStateMachine kv;
  std::unique_ptr<rsm::DiskState> disk;
  std::unique_ptr<rsm::SessionStateMachine> sm;
};

// Short TTL and few sessions, so expiry and eviction happen in the log.
rsm::SessionOptions Sessions() { return {.session_ttl = absl::Seconds(30), .max_sessions = 4}; }

std::string Outcome(const absl::StatusOr<std::string>& r) {
  return r.ok() ? "ok:" + *r : r.status().ToString();
}

TEST(KvOnDisk, AgreesWithTheInMemoryStateMachineThroughCrashesThatLoseTheLastBatch) {
  for (uint32_t seed = 1; seed <= 3; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    TempDir dir;
    const std::vector<std::string> log = MakeLog(3000, seed);
    MemoryReplica mem(Sessions());
    std::vector<std::string> want;
    for (size_t i = 0; i < log.size(); ++i) want.push_back(Outcome(mem.sm.Apply(log[i], i + 1)));

    std::mt19937 rng(seed * 7919);
    auto disk = std::make_unique<DiskReplica>(dir.path(), Sessions());
    int crashes = 0;
    while (disk->sm->applied_index() < log.size()) {
      // Apply a batch, end it (written), sometimes crash in the middle of the
      // next one: its effects were never written and must come back from the
      // log, each exactly once.
      const size_t from = disk->sm->applied_index();
      const size_t n = std::min<size_t>(1 + rng() % 40, log.size() - from);
      for (size_t i = from; i < from + n; ++i) {
        ASSERT_EQ(Outcome(disk->sm->Apply(log[i], i + 1)), want[i]) << "entry " << i + 1;
      }
      if (rng() % 5 == 0) {
        disk.reset();  // no FinishBatch: a kill -9
        disk = std::make_unique<DiskReplica>(dir.path(), Sessions());
        ASSERT_EQ(disk->sm->applied_index(), from) << "the applied index on disk";
        ++crashes;
        continue;
      }
      disk->sm->FinishBatch();
    }
    EXPECT_GT(crashes, 5);
    EXPECT_EQ(disk->sm->Snapshot(), mem.sm.Snapshot()) << "same keys, sessions, clock, index";
  }
}

TEST(KvOnDisk, ACheckpointRestoresOnAnotherReplicaWhichThenAppliesTheRestOfTheLog) {
  TempDir a_dir, b_dir;
  const std::vector<std::string> log = MakeLog(2000, 42);
  DiskReplica a(a_dir.path(), Sessions());
  DiskReplica b(b_dir.path(), Sessions());
  MemoryReplica mem(Sessions());
  for (size_t i = 0; i < 1200; ++i) {
    (void)a.sm->Apply(log[i], i + 1);
    (void)mem.sm.Apply(log[i], i + 1);
  }
  for (size_t i = 0; i < 100; ++i) (void)b.sm->Apply(log[i], i + 1);  // a laggard
  b.sm->FinishBatch();
  absl::StatusOr<std::string> snap = a.sm->TakeSnapshot();
  ASSERT_TRUE(snap.ok()) << snap.status();
  auto manifest = rsm::DecodeManifest(*snap);
  ASSERT_TRUE(manifest.ok() && manifest->has_value());
  EXPECT_EQ((*manifest)->applied_index(), 1200u);
  std::filesystem::copy(a.disk->snapshots_dir() + "/" + (*manifest)->name(),
                        b.disk->snapshots_dir() + "/" + (*manifest)->name());
  ASSERT_TRUE(b.sm->Restore(*snap).ok());
  EXPECT_EQ(b.sm->applied_index(), 1200u);
  EXPECT_EQ(b.sm->Snapshot(), mem.sm.Snapshot());
  for (size_t i = 1200; i < log.size(); ++i) {
    const std::string want = Outcome(mem.sm.Apply(log[i], i + 1));
    ASSERT_EQ(Outcome(b.sm->Apply(log[i], i + 1)), want);
    (void)a.sm->Apply(log[i], i + 1);
  }
  b.sm->FinishBatch();
  a.sm->FinishBatch();
  EXPECT_EQ(b.sm->Snapshot(), mem.sm.Snapshot());
  EXPECT_EQ(a.sm->Snapshot(), mem.sm.Snapshot());
}

TEST(KvOnDisk, AnInMemorySnapshotIsConvertedOnRestoreAndSurvivesARestart) {
  TempDir dir;
  const std::vector<std::string> log = MakeLog(1500, 9);
  MemoryReplica mem(Sessions());
  for (size_t i = 0; i < 1000; ++i) (void)mem.sm.Apply(log[i], i + 1);
  const std::string old_form = mem.sm.Snapshot();
  {
    DiskReplica disk(dir.path(), Sessions());
    ASSERT_TRUE(disk.sm->Restore(old_form).ok());
    EXPECT_EQ(disk.sm->Snapshot(), old_form);
  }
  DiskReplica disk(dir.path(), Sessions());  // restarted: it was written
  EXPECT_EQ(disk.sm->applied_index(), 1000u);
  for (size_t i = 1000; i < log.size(); ++i) {
    ASSERT_EQ(Outcome(disk.sm->Apply(log[i], i + 1)), Outcome(mem.sm.Apply(log[i], i + 1)));
  }
  disk.sm->FinishBatch();
  EXPECT_EQ(disk.sm->Snapshot(), mem.sm.Snapshot());
}

TEST(KvOnDisk, AnInMemoryReplicaRefusesACheckpoint) {
  TempDir dir;
  DiskReplica disk(dir.path(), Sessions());
  MemoryReplica mem(Sessions());
  absl::StatusOr<std::string> snap = disk.sm->TakeSnapshot();
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(mem.sm.Restore(*snap).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace ds::kv
