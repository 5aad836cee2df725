// kill -9 with the state on disk (issue 15), real kvraft-server processes:
//   - a follower catching up by snapshot is killed in the middle of fetching
//     the checkpoint's files (it resumes after its restart), then the leader
//     it fetches from is killed (the follower gets the next leader's
//     snapshot); every replica ends with the same keys, the ones written;
//   - replicas killed over and over under load while checkpoints are taken
//     every few hundred KB: linearizable, every acknowledged append exactly
//     once, and the replicas' states on disk identical at the end.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "raft/rsm/disk_state.h"
#include "tests/kvraft/process_cluster.h"

namespace ds::kv {
namespace {

using testing::kKvServer;
using testing::KvWorkload;
using testing::NewKvClerk;
using testing::ProcessCluster;

// Every application key and value in replica i's state on disk (the replica
// must be stopped).
std::map<std::string, std::string> StateOnDisk(const ProcessCluster& cluster, int i) {
  std::map<std::string, std::string> out;
  auto disk = rsm::DiskState::Open({.dir = cluster.data_dir(i) + "/state"});
  EXPECT_TRUE(disk.ok()) << disk.status();
  if (!disk.ok()) return out;
  (*disk)->app()->Scan("", "", [&out](std::string_view k, std::string_view v) {
    out.emplace(k, v);
    return true;
  });
  return out;
}

// Waits until every running replica has applied the leader's commit index.
bool WaitConverged(ProcessCluster& cluster, absl::Duration limit) {
  const absl::Time deadline = absl::Now() + limit;
  while (absl::Now() < deadline) {
    const int leader = cluster.Leader();
    auto ls = leader >= 0 ? cluster.Status(leader) : absl::StatusOr<rsm::pb::StatusResponse>();
    if (leader >= 0 && ls.ok()) {
      bool all = true;
      for (int i = 0; i < cluster.size() && all; ++i) {
        auto st = cluster.Status(i);
        all = st.ok() && st->applied_index() >= ls->commit_index();
      }
      if (all) return true;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  return false;
}

// Key i's value in round `tag`: 1000 random (incompressible) bytes, so the
// checkpoint holds about as many bytes as the data.
std::string Value(const std::string& tag, int i) {
  std::mt19937 rng(static_cast<uint32_t>(i) * 31 + static_cast<uint32_t>(tag[0]));
  std::string v = tag;
  for (int k = 0; k < 1000; ++k) v.push_back(static_cast<char>('!' + rng() % 90));
  return v;
}

// Puts keys [first, first + count) with 1 KiB values from several clients.
void Fill(const ProcessCluster& cluster, int first, int count, const std::string& tag) {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto clerk = NewKvClerk(cluster, absl::Seconds(30));
      for (int i = first + t; i < first + count; i += 8) {
        if (!clerk->Put(absl::StrCat("key", i), Value(tag, i)).ok()) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

// Waits until replica i's log contains `text` (after `from` bytes).
bool WaitForLog(const ProcessCluster& cluster, int i, const std::string& text, size_t from,
                absl::Duration limit) {
  const absl::Time deadline = absl::Now() + limit;
  while (absl::Now() < deadline) {
    std::string log = common::ReadWholeFile(cluster.log_path(i)).value_or("");
    if (log.size() > from && absl::StrContains(log.substr(from), text)) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

// The number right after `marker`, in the first line of `log` that contains
// `line` (after `line`): the MiB figures of the fetcher's log lines.
std::optional<double> NumberAfter(const std::string& log, const std::string& line,
                                  const std::string& marker) {
  const size_t at = log.find(line);
  const size_t m = at == std::string::npos ? at : log.find(marker, at);
  if (m == std::string::npos) return std::nullopt;
  const size_t from = m + marker.size();
  double value = 0;
  if (!absl::SimpleAtod(log.substr(from, log.find(' ', from) - from), &value)) return std::nullopt;
  return value;
}

size_t LogSize(const ProcessCluster& cluster, int i) {
  return common::ReadWholeFile(cluster.log_path(i)).value_or("").size();
}

// Bytes already in snapshots/*.partial of replica i.
uint64_t PartialBytes(const ProcessCluster& cluster, int i) {
  uint64_t total = 0;
  std::error_code ec;
  const std::string dir = cluster.data_dir(i) + "/state/snapshots";
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec) && absl::StrContains(e.path().string(), ".partial/")) {
      total += e.file_size(ec);
    }
  }
  return total;
}

TEST(KvraftDiskCrash, ASnapshotFetchSurvivesKillsOfTheReceiverAndOfTheSender) {
  // 2 MB/s per file transfer: the ~6 MB checkpoint takes seconds to fetch.
  ProcessCluster cluster(
      kKvServer, 3,
      {"--tick-interval=50ms", "--election-ticks=10", "--log-level=info",
       "--snapshot-threshold-bytes=300000", "--memtable-bytes=1048576",
       "--snapshot-send-bytes-per-second=2000000", "--snapshot-catchup-entries=100"});
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  ASSERT_GE(cluster.WaitForLeader(), 0);
  // Replica `lagging` misses everything: its catch-up needs a snapshot.
  int leader = cluster.WaitForLeader();
  const int lagging = (leader + 1) % 3;
  cluster.Kill(lagging);
  Fill(cluster, 0, 6000, "a");
  leader = cluster.WaitForLeader();
  auto ls = cluster.Status(leader);
  ASSERT_TRUE(ls.ok());
  ASSERT_GT(ls->snapshot_index(), 0u) << "no snapshot taken";

  // The receiver killed mid-fetch: the partial files stay, the old state is
  // untouched, and the next start continues from them.
  size_t mark = LogSize(cluster, lagging);
  cluster.Start(lagging);
  ASSERT_TRUE(WaitForLog(cluster, lagging, "fetching snapshot", mark, absl::Seconds(30)))
      << cluster.LogTail(lagging);
  absl::SleepFor(absl::Milliseconds(1200));
  cluster.Kill(lagging);
  const uint64_t partial = PartialBytes(cluster, lagging);
  EXPECT_GT(partial, 1000000u) << "the fetch was not under way";
  mark = LogSize(cluster, lagging);
  cluster.Start(lagging);
  ASSERT_TRUE(WaitForLog(cluster, lagging, "fetched snapshot", mark, absl::Seconds(60)))
      << cluster.LogTail(lagging);
  // It received less than the whole checkpoint this time: it resumed.
  {
    const std::string log = common::ReadWholeFile(cluster.log_path(lagging))->substr(mark);
    std::optional<double> received = NumberAfter(log, "fetched snapshot", ": ");
    std::optional<double> total = NumberAfter(log, "fetching snapshot", "files, ");
    ASSERT_TRUE(received && total) << log;
    EXPECT_LT(*received, *total - 0.9) << "the second fetch started over";
  }
  ASSERT_TRUE(WaitConverged(cluster, absl::Seconds(30)));

  // The sender killed mid-fetch: the receiver gives up on it or is handed
  // the next leader's snapshot, and catches up either way.
  cluster.Kill(lagging);
  Fill(cluster, 6000, 3000, "b");
  leader = cluster.WaitForLeader();
  ASSERT_GE(leader, 0);
  mark = LogSize(cluster, lagging);
  cluster.Start(lagging);
  ASSERT_TRUE(WaitForLog(cluster, lagging, "fetching snapshot", mark, absl::Seconds(30)))
      << cluster.LogTail(lagging);
  absl::SleepFor(absl::Milliseconds(700));
  cluster.Kill(leader);
  ASSERT_GE(cluster.WaitForLeader(), 0);
  Fill(cluster, 9000, 300, "c");  // the group serves with two replicas
  cluster.Start(leader);
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  ASSERT_TRUE(WaitConverged(cluster, absl::Seconds(90)))
      << "replica " << lagging + 1 << " never caught up:\n"
      << cluster.LogTail(lagging);

  // Every replica holds exactly what was written.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(cluster.Terminate(i), 0);
  std::map<std::string, std::string> want;
  for (int i = 0; i < 9300; ++i) {
    want[absl::StrCat("key", i)] = Value(i < 6000 ? "a" : i < 9000 ? "b" : "c", i);
  }
  for (int i = 0; i < 3; ++i) {
    std::map<std::string, std::string> got = StateOnDisk(cluster, i);
    EXPECT_EQ(got.size(), want.size()) << "replica " << i + 1;
    EXPECT_TRUE(got == want) << "replica " << i + 1 << " differs";
  }
}

TEST(KvraftDiskCrash, ReplicasKilledDuringApplyAndCheckpointsLoseNothingAndAgree) {
  ProcessCluster cluster(kKvServer, 3,
                         {"--tick-interval=50ms", "--election-ticks=10", "--log-level=warn",
                          "--snapshot-threshold-bytes=30000", "--memtable-bytes=1048576"});
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  KvWorkload w(cluster, 4, 5);
  std::mt19937 rng(15);
  for (int round = 0; round < 8; ++round) {
    absl::SleepFor(absl::Milliseconds(600 + rng() % 600));
    const int victim = rng() % 2 ? cluster.Leader() : static_cast<int>(rng() % 3);
    if (victim < 0) continue;
    cluster.Kill(victim);
    absl::SleepFor(absl::Milliseconds(300 + rng() % 500));
    cluster.Start(victim);
  }
  absl::SleepFor(absl::Seconds(1));
  w.Stop();
  EXPECT_GT(w.acknowledged(), 100) << cluster.LogTail(0);
  int snapshots = 0;
  for (int i = 0; i < 3; ++i) {
    auto st = cluster.Status(i, absl::Seconds(5));
    if (st.ok() && st->snapshot_index() > 0) ++snapshots;
  }
  EXPECT_GT(snapshots, 0) << "no checkpoint was taken";
  testing::ExpectLinearizable(w.history().Snapshot());
  testing::ExpectAppendsExactlyOnce(w.appends(), testing::KvReader(cluster));
  ASSERT_TRUE(WaitConverged(cluster, absl::Seconds(30)));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(cluster.Terminate(i), 0);
  const std::map<std::string, std::string> first = StateOnDisk(cluster, 0);
  EXPECT_FALSE(first.empty());
  for (int i = 1; i < 3; ++i) EXPECT_TRUE(StateOnDisk(cluster, i) == first) << "replica " << i + 1;
}

}  // namespace
}  // namespace ds::kv
