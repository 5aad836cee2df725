// Multi-process tests of kvraft-server: real binaries on loopback, killed with
// SIGKILL, paused with SIGSTOP, restarted; the client history must be
// linearizable and every acknowledged Append present exactly once.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/kvraft/process_cluster.h"
#include "tests/lincheck/linearizability.h"

namespace ds::kv {
namespace {

using lincheck::HistoryRecorder;
using lincheck::OpKind;
using testing::ProcessCluster;

// Raft timing for tests: elections within about a second.
const std::vector<std::string> kFastRaft = {"--tick-interval=50ms", "--election-ticks=10",
                                            "--log-level=warn"};

std::string Tail(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > 3000 ? s.substr(s.size() - 3000) : s;
}

// Clients doing random Put/Append/Get on a few keys, recording the history.
// Appends carry unique tokens "c<client>.<n>;" so duplicates and losses show.
class Workload {
 public:
  Workload(ProcessCluster* cluster, int clients, int keys) : keys_(keys) {
    for (int c = 0; c < clients; ++c) {
      threads_.emplace_back([this, cluster, c] { Run(cluster, c); });
    }
  }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  ~Workload() {
    if (!threads_.empty()) Stop();
  }

  HistoryRecorder& history() { return history_; }
  int64_t acknowledged() const { return acknowledged_.load(); }
  // token -> acknowledged?
  std::map<std::string, bool> appends() {
    absl::MutexLock lock(&mu_);
    return appends_;
  }

 private:
  void Run(ProcessCluster* cluster, int c) {
    auto clerk = cluster->NewClerk(absl::Seconds(3));
    std::mt19937 rng(1000 + c);
    for (int n = 0; !stop_; ++n) {
      // Appends go to append-only keys a<i>, Puts to k<i>, so an acknowledged
      // append can never be erased by a Put; Gets read both.
      int what = rng() % 10;
      int k = rng() % keys_;
      std::string key = what < 4 ? (rng() % 2 ? absl::StrCat("a", k) : absl::StrCat("k", k))
                                 : (what < 8 ? absl::StrCat("a", k) : absl::StrCat("k", k));
      if (what < 4) {
        auto h = history_.Begin(c, OpKind::kGet, key);
        auto r = clerk->Get(key);
        if (r.ok()) {
          history_.End(h, r->value, r->found);
          acknowledged_++;
        } else {
          history_.Discard(h);  // a failed read has no effect
        }
      } else {
        bool append = what < 8;
        std::string value = absl::StrCat("c", c, ".", n, ";");
        if (append) {
          absl::MutexLock lock(&mu_);
          appends_[key + "/" + value] = false;
        }
        auto h = history_.Begin(c, append ? OpKind::kAppend : OpKind::kPut, key, value);
        absl::Status st = append ? clerk->Append(key, value) : clerk->Put(key, value);
        if (st.ok()) {
          history_.End(h);
          acknowledged_++;
          if (append) {
            absl::MutexLock lock(&mu_);
            appends_[key + "/" + value] = true;
          }
        }
        // else: outcome unknown; the operation stays open in the history.
      }
    }
  }

  const int keys_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> acknowledged_{0};
  HistoryRecorder history_;
  absl::Mutex mu_;
  std::map<std::string, bool> appends_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

void CheckHistory(Workload& w, ProcessCluster&) {
  testing::ExpectLinearizable(w.history().Snapshot());
}

void CheckAppends(Workload& w, ProcessCluster& cluster) {
  testing::ExpectAppendsExactlyOnce(w.appends(), cluster);
}

TEST(KvraftProcess, LeaderKilledInALoop) {
  ProcessCluster cluster(3, kFastRaft);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cluster.WaitHealthy(i).ok());
  Workload w(&cluster, 4, 3);
  for (int round = 0; round < 4; ++round) {
    absl::SleepFor(absl::Milliseconds(1500));
    int leader = cluster.Leader();
    if (leader < 0) continue;
    cluster.Kill(leader);
    absl::SleepFor(absl::Milliseconds(1000));
    cluster.Start(leader);
  }
  absl::SleepFor(absl::Seconds(1));
  w.Stop();
  EXPECT_GT(w.acknowledged(), 50) << "the cluster made too little progress; logs:\n"
                                  << Tail(cluster.log_path(0));
  CheckHistory(w, cluster);
  CheckAppends(w, cluster);
}

TEST(KvraftProcess, FiveReplicasRandomKillsAndPauses) {
  ProcessCluster cluster(5, kFastRaft);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(cluster.WaitHealthy(i).ok());
  Workload w(&cluster, 4, 3);
  std::mt19937 rng(7);
  for (int round = 0; round < 5; ++round) {
    // Take down at most two replicas (a majority stays up): one killed, one paused.
    int killed = rng() % 5;
    int paused = (killed + 1 + rng() % 4) % 5;
    cluster.Kill(killed);
    cluster.Pause(paused);
    absl::SleepFor(absl::Milliseconds(1200));
    cluster.Resume(paused);
    cluster.Start(killed);
    absl::SleepFor(absl::Milliseconds(600));
  }
  absl::SleepFor(absl::Seconds(1));
  w.Stop();
  EXPECT_GT(w.acknowledged(), 50);
  CheckHistory(w, cluster);
  CheckAppends(w, cluster);
}

TEST(KvraftProcess, AllReplicasKilledRecoverAcknowledgedWrites) {
  ProcessCluster cluster(3, kFastRaft);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cluster.WaitHealthy(i).ok());
  auto clerk = cluster.NewClerk(absl::Seconds(20));
  for (int i = 0; i < 50; ++i)
    ASSERT_TRUE(clerk->Put(absl::StrCat("key", i), absl::StrCat("v", i)).ok());
  ASSERT_TRUE(clerk->Append("key0", "+x").ok());
  for (int i = 0; i < 3; ++i) cluster.Restart(i);  // kill -9 each, start again
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cluster.WaitHealthy(i).ok());
  auto fresh = cluster.NewClerk(absl::Seconds(20));
  for (int i = 1; i < 50; ++i) {
    auto r = fresh->Get(absl::StrCat("key", i));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->value, absl::StrCat("v", i));
  }
  auto r0 = fresh->Get("key0");
  ASSERT_TRUE(r0.ok());
  EXPECT_EQ(r0->value, "v0+x");
}

TEST(KvraftProcess, SnapshotsBoundTheLogAndCatchUpARestartedReplica) {
  ProcessCluster cluster(3, {"--tick-interval=50ms", "--election-ticks=10", "--log-level=warn",
                             "--snapshot-threshold-bytes=20000"});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cluster.WaitHealthy(i).ok());
  auto clerk = cluster.NewClerk(absl::Seconds(20));
  ASSERT_TRUE(clerk->Put("warm", "up").ok());
  int leader = cluster.Leader();
  ASSERT_GE(leader, 0);
  int lagging = (leader + 1) % 3;
  cluster.Kill(lagging);
  const std::string value(200, 'x');
  for (int i = 0; i < 400; ++i) ASSERT_TRUE(clerk->Put(absl::StrCat("k", i % 50), value).ok());
  ASSERT_TRUE(clerk->Put("last", "1").ok());
  auto leader_status = clerk->EndpointStatus(cluster.endpoints()[leader]);
  ASSERT_TRUE(leader_status.ok());
  EXPECT_GT(leader_status->snapshot_index(), 0u);
  EXPECT_LT(leader_status->log_bytes(), 3 * 20000u) << "the log is not being compacted";
  cluster.Start(lagging);
  ASSERT_TRUE(cluster.WaitHealthy(lagging).ok());
  // The restarted replica catches up (its missing entries were compacted away
  // on the leader, so through InstallSnapshot).
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  uint64_t applied = 0;
  while (absl::Now() < deadline) {
    auto st = clerk->EndpointStatus(cluster.endpoints()[lagging]);
    if (st.ok()) applied = st->applied_index();
    if (applied >= leader_status->commit_index()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_GE(applied, leader_status->commit_index()) << Tail(cluster.log_path(lagging));
}

TEST(KvraftProcess, GracefulShutdownOnSigterm) {
  ProcessCluster cluster(1, kFastRaft);
  ASSERT_TRUE(cluster.WaitHealthy(0).ok());
  auto clerk = cluster.NewClerk(absl::Seconds(10));
  ASSERT_TRUE(clerk->Put("a", "1").ok());
  EXPECT_EQ(cluster.Terminate(0), 0);
  cluster.Start(0);
  ASSERT_TRUE(cluster.WaitHealthy(0).ok());
  auto r = clerk->Get("a");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value, "1");
}

}  // namespace
}  // namespace ds::kv
