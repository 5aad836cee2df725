// DiskState (raft/rsm/disk_state.h): the pending batch and what a crash
// keeps, checkpoints, restoring one elsewhere, and that an interrupted or
// failed restore leaves the old state whole.
#include "raft/rsm/disk_state.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "tests/common/temp_dir.h"

namespace ds::rsm {
namespace {

using ::ds::testing::TempDir;

std::unique_ptr<DiskState> MustOpen(const std::string& dir) {
  auto s = DiskState::Open({.dir = dir, .block_cache_bytes = 8 << 20, .memtable_bytes = 1 << 20});
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

std::vector<std::pair<std::string, std::string>> All(const AppState& state) {
  std::vector<std::pair<std::string, std::string>> out;
  state.Scan("", "", [&out](std::string_view k, std::string_view v) {
    out.emplace_back(k, v);
    return true;
  });
  return out;
}

std::string Key(int i) { return absl::StrFormat("k%06d", i); }

// Copies checkpoint `name` from one state's snapshots directory to another's,
// as the fetcher would.
void CopyCheckpoint(const DiskState& from, const DiskState& to, const std::string& name) {
  std::filesystem::copy(from.snapshots_dir() + "/" + name, to.snapshots_dir() + "/" + name);
}

TEST(DiskState, WritesAreVisibleToTheWriterAtOnceAndDurableOnlyWithTheirBatch) {
  TempDir dir;
  {
    auto s = MustOpen(dir.path());
    s->app()->Put("a", "1");
    s->PutMeta("applied", "1");
    EXPECT_EQ(s->app()->Get("a"), "1");
    s->Commit();
    s->app()->Put("b", "2");  // never committed: a crash loses it
    s->app()->Delete("a");
    EXPECT_EQ(s->app()->Get("a"), std::nullopt);
    EXPECT_EQ(s->app()->Get("b"), "2");
  }
  auto s = MustOpen(dir.path());
  EXPECT_EQ(s->app()->Get("a"), "1");
  EXPECT_EQ(s->app()->Get("b"), std::nullopt);
  EXPECT_EQ(s->GetMeta("applied"), "1");
  EXPECT_EQ(s->app()->Get("applied"), std::nullopt) << "the session layer's keys are apart";
}

TEST(DiskState, ScanSeesCommittedAndPendingWritesInOrderAndDeleteRangeRemovesBoth) {
  TempDir dir;
  auto s = MustOpen(dir.path());
  for (int i = 0; i < 10; i += 2) s->app()->Put(Key(i), "old");
  s->Commit();
  for (int i = 1; i < 10; i += 2) s->app()->Put(Key(i), "new");
  s->app()->Delete(Key(4));
  std::vector<std::string> keys;
  s->app()->Scan(Key(2), Key(8), [&keys](std::string_view k, std::string_view) {
    keys.emplace_back(k);
    return true;
  });
  EXPECT_EQ(keys, (std::vector<std::string>{Key(2), Key(3), Key(5), Key(6), Key(7)}));
  s->app()->DeleteRange(Key(3), Key(7));
  s->Commit();
  keys.clear();
  for (const auto& [k, v] : All(*s->app())) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{Key(0), Key(1), Key(2), Key(7), Key(8), Key(9)}));
}

// The state on disk behaves as the in-memory AppState under random Put,
// Delete, DeleteRange (a RocksDB range deletion, kept aside until the batch is
// written), Get and Scan, with batches committed or lost to a crash at random.
TEST(DiskState, BehavesAsTheMemoryStateUnderRandomWritesRangeDeletesAndCrashes) {
  for (uint32_t seed = 1; seed <= 3; ++seed) {
    SCOPED_TRACE(seed);
    TempDir dir;
    std::mt19937 rng(seed);
    auto s = MustOpen(dir.path());
    MemoryAppState model, committed;
    auto key = [&rng] { return absl::StrFormat("k%03d", static_cast<int>(rng() % 200)); };
    auto scan = [](const AppState& st, const std::string& from, const std::string& to) {
      std::vector<std::pair<std::string, std::string>> out;
      st.Scan(from, to, [&out](std::string_view k, std::string_view v) {
        out.emplace_back(k, v);
        return true;
      });
      return out;
    };
    for (int op = 0; op < 6000; ++op) {
      const int r = static_cast<int>(rng() % 100);
      if (r < 35) {
        const std::string k = key(), v = absl::StrCat("v", op);
        s->app()->Put(k, v);
        model.Put(k, v);
      } else if (r < 45) {
        const std::string k = key();
        s->app()->Delete(k);
        model.Delete(k);
      } else if (r < 53) {
        std::string from = key(), to = rng() % 8 == 0 ? "" : key();
        if (!to.empty() && to < from) std::swap(from, to);
        s->app()->DeleteRange(from, to);
        model.DeleteRange(from, to);
      } else if (r < 70) {
        const std::string k = key();
        ASSERT_EQ(s->app()->Get(k), model.Get(k)) << "op " << op << " get " << k;
      } else if (r < 82) {
        std::string from = key(), to = rng() % 4 == 0 ? "" : key();
        if (!to.empty() && to < from) std::swap(from, to);
        ASSERT_EQ(scan(*s->app(), from, to), scan(model, from, to))
            << "op " << op << " scan [" << from << ", " << to << ")";
      } else if (r < 95) {
        s->PutMeta("applied", absl::StrCat(op));
        s->Commit();
        committed = model;
      } else {
        // A crash: the pending batch is lost.
        s.reset();
        s = MustOpen(dir.path());
        model = committed;
        ASSERT_EQ(scan(*s->app(), "", ""), scan(model, "", "")) << "op " << op << " reopen";
      }
    }
    EXPECT_TRUE(s->GetMeta("applied").has_value()) << "a range deletion reached the meta keys";
  }
}

TEST(DiskState, ACheckpointRestoredOnAnotherReplicaIsTheCommittedStateAtItsIndex) {
  TempDir a_dir, b_dir;
  auto a = MustOpen(a_dir.path());
  auto b = MustOpen(b_dir.path());
  // Enough data for several SST files (1 MiB memtables).
  const std::string value(1000, 'v');
  for (int i = 0; i < 5000; ++i) {
    a->app()->Put(Key(i), value);
    if (i % 500 == 499) a->Commit();
  }
  a->PutMeta("applied", "7");
  b->app()->Put("only-in-b", "x");
  b->Commit();
  auto m = a->Checkpoint(7);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->applied_index(), 7u);
  EXPECT_EQ(m->source_id(), a->id());
  EXPECT_GT(m->files_size(), 3);
  // A keeps writing: the checkpoint does not move.
  a->app()->Put(Key(0), "changed after the checkpoint");
  a->Commit();

  CopyCheckpoint(*a, *b, m->name());
  const uint64_t b_id = b->id();
  ASSERT_TRUE(b->Restore(*m).ok());
  EXPECT_NE(b->id(), a->id()) << "a restored state has an identity of its own";
  EXPECT_NE(b->id(), b_id);
  EXPECT_EQ(b->GetMeta("applied"), "7");
  EXPECT_EQ(b->app()->Get("only-in-b"), std::nullopt);
  EXPECT_EQ(b->app()->Get(Key(0)), value);
  EXPECT_EQ(All(*b->app()).size(), 5000u);
  // The switch is durable; the old live directory is gone.
  const uint64_t restored_id = b->id();
  b.reset();
  b = MustOpen(b_dir.path());
  EXPECT_EQ(b->id(), restored_id);
  EXPECT_EQ(All(*b->app()).size(), 5000u);
  int live_dirs = 0;
  for (const auto& e : std::filesystem::directory_iterator(b_dir.path())) {
    live_dirs += e.path().filename().string().rfind("db-", 0) == 0;
  }
  EXPECT_EQ(live_dirs, 1);
  // The checkpoint itself is untouched by the restored state's writes.
  b->app()->Put(Key(1), "b writes");
  b->Commit();
  auto again = DiskState::Open({.dir = a_dir.path() + "-copy"});
  ASSERT_TRUE(again.ok());
  std::filesystem::copy(b->snapshots_dir() + "/" + m->name(),
                        (*again)->snapshots_dir() + "/" + m->name());
  ASSERT_TRUE((*again)->Restore(*m).ok());
  EXPECT_EQ((*again)->app()->Get(Key(1)), value);
  again->reset();
  (void)common::RemoveTree(a_dir.path() + "-copy");
}

TEST(DiskState, ARestoreFromAnIncompleteCheckpointFailsAndKeepsTheOldState) {
  TempDir a_dir, b_dir;
  auto a = MustOpen(a_dir.path());
  auto b = MustOpen(b_dir.path());
  for (int i = 0; i < 100; ++i) a->app()->Put(Key(i), "a");
  b->app()->Put("mine", "b");
  a->Commit();
  b->Commit();
  auto m = a->Checkpoint(3);
  ASSERT_TRUE(m.ok());
  CopyCheckpoint(*a, *b, m->name());
  // One file short (a transfer that never finished).
  const std::string victim =
      absl::StrCat(b->snapshots_dir(), "/", m->name(), "/", m->files(m->files_size() - 1).name());
  ASSERT_EQ(truncate(victim.c_str(), 1), 0);
  EXPECT_FALSE(b->Restore(*m).ok());
  EXPECT_EQ(b->app()->Get("mine"), "b");
  b.reset();
  b = MustOpen(b_dir.path());
  EXPECT_EQ(b->app()->Get("mine"), "b");
  EXPECT_EQ(b->app()->Get(Key(0)), std::nullopt);
}

TEST(DiskState, OpenDropsWhatAnInterruptedRestoreLeftAndKeepsTheNamedState) {
  TempDir dir;
  {
    auto s = MustOpen(dir.path());
    s->app()->Put("k", "live");
    s->Commit();
  }
  // A restore that crashed before switching CURRENT_DB: a half-built
  // directory and a complete one that nothing names.
  std::filesystem::create_directories(dir.path() + "/db-7.tmp");
  ASSERT_TRUE(common::WriteFileDurably(dir.path() + "/db-7.tmp/000001.sst", "torn").ok());
  std::filesystem::create_directories(dir.path() + "/db-8");
  ASSERT_TRUE(common::WriteFileDurably(dir.path() + "/db-8/CURRENT", "MANIFEST-000001\n").ok());
  auto s = MustOpen(dir.path());
  EXPECT_EQ(s->app()->Get("k"), "live");
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/db-7.tmp"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/db-8"));
}

// ---- Kill -9 at each step of a checkpoint and of a restore ----
//
// rsm_disk_crash_helper runs the operation and kills itself with SIGKILL at
// one of kFailPoints; the test then reopens the directory as a restarted
// replica would.

// Runs the helper; its exit status (128 + 9: killed at the step).
int RunHelper(const std::vector<std::string>& args, const std::string& log) {
  common::SubprocessOptions options;
  options.argv = {common::BinaryPath("rsm_disk_crash_helper")};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.log_path = log;
  auto child = common::Subprocess::Start(std::move(options));
  EXPECT_TRUE(child.ok()) << child.status();
  if (!child.ok()) return -1;
  return (*child)->WaitFor(absl::Seconds(60)).value_or(-1);
}

using Pairs = std::vector<std::pair<std::string, std::string>>;

// Keys [from, to) set to `value`, meta applied = `applied`, committed over
// several memtables (1 MiB), so the state spans SST files and a WAL tail.
void FillState(DiskState& s, int from, int to, const std::string& value,
               const std::string& applied) {
  for (int i = from; i < to; ++i) {
    s.app()->Put(Key(i), value);
    if (i % 300 == 299) s.Commit();
  }
  s.PutMeta("applied", applied);
  s.Commit();
}

Pairs Expected(std::initializer_list<std::tuple<int, int, std::string>> ranges) {
  std::map<std::string, std::string> m;
  for (const auto& [from, to, value] : ranges) {
    for (int i = from; i < to; ++i) m[Key(i)] = value;
  }
  return Pairs(m.begin(), m.end());
}

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The checkpoint `m` in `from`'s snapshots restored into a fresh directory.
Pairs RestoredElsewhere(const DiskState& from, const pb::CheckpointManifest& m) {
  TempDir dir;
  auto other = MustOpen(dir.path());
  CopyCheckpoint(from, *other, m.name());
  absl::Status s = other->Restore(m);
  EXPECT_TRUE(s.ok()) << s;
  return All(*other->app());
}

TEST(DiskStateCrash, AKillAtAnyStepOfACheckpointKeepsTheStateAndTheNamedCheckpoint) {
  const std::string v1(1000, '1'), v2(1000, '2');
  const Pairs at1 = Expected({{0, 3000, v1}});
  const Pairs at2 = Expected({{0, 1000, v2}, {1000, 3000, v1}});
  for (std::string_view step : kFailPoints) {
    if (!step.starts_with("checkpoint:")) continue;
    SCOPED_TRACE(step);
    TempDir dir;
    pb::CheckpointManifest named;  // the checkpoint the Raft snapshot names
    {
      auto s = MustOpen(dir.path());
      FillState(*s, 0, 3000, v1, "1");
      auto m = s->Checkpoint(1);
      ASSERT_TRUE(m.ok()) << m.status();
      named = *m;
    }
    ASSERT_EQ(RunHelper({"checkpoint", dir.path(), std::string(step)}, dir.path() + ".log"),
              128 + SIGKILL)
        << "the helper did not reach the step";
    auto s = MustOpen(dir.path());
    ASSERT_NE(s, nullptr);
    // Batch 2 was committed before the kill: kill -9 keeps what reached the
    // write-ahead log (and the Raft log would replay it anyway).
    EXPECT_EQ(s->GetMeta("applied"), "2");
    EXPECT_EQ(All(*s->app()), at2);
    // Nothing half made is left; the named checkpoint is intact.
    for (const std::string& name : Names(s->snapshots_dir())) {
      EXPECT_FALSE(absl::EndsWith(name, ".tmp")) << name;
    }
    EXPECT_EQ(RestoredElsewhere(*s, named), at1);
    // The interrupted checkpoint can be taken again, and is the new state.
    auto again = s->Checkpoint(2);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(RestoredElsewhere(*s, *again), at2);
    (void)common::RemoveTree(dir.path() + ".log");
  }
}

TEST(DiskStateCrash, AKillAtAnyStepOfARestoreLeavesTheOldStateOrTheNewOneWhole) {
  const std::string v1(1000, '1'), mine(500, 'b');
  const Pairs checkpointed = Expected({{0, 3000, v1}});
  const Pairs old_state = Expected({{0, 800, mine}});
  for (std::string_view step : kFailPoints) {
    if (!step.starts_with("restore:")) continue;
    SCOPED_TRACE(step);
    TempDir a_dir, b_dir;
    pb::CheckpointManifest m;
    uint64_t a_id = 0, b_id = 0;
    {
      auto a = MustOpen(a_dir.path());
      FillState(*a, 0, 3000, v1, "1");
      auto made = a->Checkpoint(1);
      ASSERT_TRUE(made.ok()) << made.status();
      m = *made;
      a_id = a->id();
      auto b = MustOpen(b_dir.path());
      FillState(*b, 0, 800, mine, "9");
      b_id = b->id();
      CopyCheckpoint(*a, *b, m.name());
    }
    const std::string manifest_file = b_dir.path() + "/../" + m.name() + ".manifest";
    ASSERT_TRUE(common::WriteFileDurably(manifest_file, EncodeManifest(m)).ok());
    ASSERT_EQ(RunHelper({"restore", b_dir.path(), manifest_file, std::string(step)},
                        b_dir.path() + ".log"),
              128 + SIGKILL)
        << "the helper did not reach the step";
    auto b = MustOpen(b_dir.path());
    ASSERT_NE(b, nullptr);
    int live_dirs = 0;
    for (const std::string& name : Names(b_dir.path())) live_dirs += absl::StartsWith(name, "db-");
    EXPECT_EQ(live_dirs, 1) << "Open keeps only the database CURRENT_DB names";
    if (step == "restore:switched") {
      EXPECT_EQ(All(*b->app()), checkpointed);
      EXPECT_EQ(b->GetMeta("applied"), "1");
      // Never the identity of the checkpoint's source (a peer reuses files
      // of an earlier checkpoint of the same identity), nor the old one.
      EXPECT_NE(b->id(), a_id);
      EXPECT_NE(b->id(), b_id);
    } else {
      EXPECT_EQ(All(*b->app()), old_state);
      EXPECT_EQ(b->GetMeta("applied"), "9");
      EXPECT_EQ(b->id(), b_id);
      // The checkpoint is still there: the restore can be done again.
      ASSERT_TRUE(b->Restore(m).ok());
      EXPECT_EQ(All(*b->app()), checkpointed);
    }
    (void)common::RemoveTree(manifest_file);
    (void)common::RemoveTree(b_dir.path() + ".log");
  }
}

TEST(DiskState, OldCheckpointsAndPartialDownloadsAreDropped) {
  TempDir dir;
  auto s = MustOpen(dir.path());
  s->app()->Put("k", "v");
  s->Commit();
  auto m5 = s->Checkpoint(5);
  auto m9 = s->Checkpoint(9);
  ASSERT_TRUE(m5.ok() && m9.ok());
  const std::string partial_old =
      s->snapshots_dir() + "/ckpt-00000000000000000007-00000000000000aa.partial";
  const std::string partial_new =
      s->snapshots_dir() + "/ckpt-00000000000000000012-00000000000000aa.partial";
  std::filesystem::create_directories(partial_old);
  std::filesystem::create_directories(partial_new);
  s->DropCheckpointsBefore(9);
  EXPECT_FALSE(std::filesystem::exists(s->snapshots_dir() + "/" + m5->name()));
  EXPECT_TRUE(std::filesystem::exists(s->snapshots_dir() + "/" + m9->name()));
  EXPECT_FALSE(std::filesystem::exists(partial_old));
  EXPECT_TRUE(std::filesystem::exists(partial_new)) << "a newer snapshot may still be arriving";
}

TEST(DiskState, AnUnknownCompressionIsRefused) {
  TempDir dir;
  auto s = DiskState::Open({.dir = dir.path(), .compression = "gzip9"});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DiskState, ManifestsRoundTripAndOtherSnapshotDataIsNotOne) {
  pb::CheckpointManifest m;
  m.set_name("ckpt-1-2");
  m.add_files()->set_name("000001.sst");
  auto back = DecodeManifest(EncodeManifest(m));
  ASSERT_TRUE(back.ok() && back->has_value());
  EXPECT_EQ((*back)->name(), "ckpt-1-2");
  auto other = DecodeManifest(std::string("\x10\0\0\0\0\0\0\0", 8));
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->has_value());
  m.mutable_files(0)->set_name("../../etc/passwd");
  EXPECT_FALSE(DecodeManifest(EncodeManifest(m)).ok()) << "file names are plain names";
}

}  // namespace
}  // namespace ds::rsm
