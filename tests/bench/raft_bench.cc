// raft_bench: commit throughput and latency of a 3-replica Raft group in one
// process, over gRPC on loopback, with RocksDB on disk (fsync per Ready).
//
// N proposers each loop: Propose(entry) at the leader, wait until the leader
// applied it (committed: fsync'd on a majority), repeat.
// Prints commits/s, p50/p99 commit latency, and fsyncs per committed entry.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/time/clock.h"
#include "common/init.h"
#include "tests/raft/grpc_cluster.h"
#include "tests/raft/storage_test_util.h"

ABSL_FLAG(int, proposers, 64, "Concurrent proposer threads, each with one entry in flight.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10), "Measured run time.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1), "Run time before measuring starts.");
ABSL_FLAG(int, entry_bytes, 256, "Payload bytes per entry.");
ABSL_FLAG(absl::Duration, tick_interval, absl::Milliseconds(50), "Raft tick period.");
ABSL_FLAG(absl::Duration, snapshot_interval, absl::Seconds(2),
          "Every replica snapshots (and compacts its log) this often, as an RSM would; "
          "0 disables.");
ABSL_FLAG(std::string, dir, "",
          "Directory for the RocksDB data (default: a temp dir under $TMPDIR).");

namespace {

using ds::raft::NodeStatus;
using ds::raft::testing_util::GrpcCluster;
using ds::raft::testing_util::GrpcClusterOptions;

struct Totals {
  uint64_t synced_saves = 0;
  uint64_t saves = 0;
};

Totals SumSaves(GrpcCluster& c) {
  Totals t;
  for (uint64_t id : c.ids()) {
    NodeStatus s = c.node(id)->GetStatus();
    t.synced_saves += s.synced_saves;
    t.saves += s.saves;
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  ds::common::InitProcess(argc, argv,
                          "raft_bench: commits/s and commit latency of 3 Raft replicas in one "
                          "process over gRPC on loopback with RocksDB storage.");
  const int proposers = absl::GetFlag(FLAGS_proposers);
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  const absl::Duration warmup = absl::GetFlag(FLAGS_warmup);
  const int entry_bytes = absl::GetFlag(FLAGS_entry_bytes);

  ds::raft::testing_util::TempDir temp;
  const std::string dir = absl::GetFlag(FLAGS_dir).empty() ? temp.path() : absl::GetFlag(FLAGS_dir);
  GrpcClusterOptions options;
  options.tick_interval = absl::GetFlag(FLAGS_tick_interval);
  options.light_apps = true;
  auto cluster = GrpcCluster::Create(dir, options);
  if (!cluster.ok()) {
    std::fprintf(stderr, "cluster: %s\n", cluster.status().ToString().c_str());
    return 1;
  }
  GrpcCluster& c = **cluster;
  const uint64_t leader = c.WaitForLeader(absl::Seconds(30));
  if (leader == 0) {
    std::fprintf(stderr, "no leader\n");
    return 1;
  }

  // Each proposer is a closed loop with one entry in flight: propose, wait for
  // the commit, propose the next. They are driven by callbacks (ProposeAsync
  // and the leader's apply), not one thread each, so the figures measure Raft
  // rather than the scheduler juggling hundreds of client threads.
  std::atomic<bool> measuring{false};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> failures{0};
  std::atomic<int> idle{0};
  struct Proposer {
    std::vector<int64_t> latencies_us;
    absl::Time start;
    std::string data;
  };
  std::vector<Proposer> slots(proposers);
  ds::raft::Node* node = c.node(leader);
  ds::raft::testing_util::LogApp* app = c.app(leader);
  std::function<void(int)> propose = [&](int t) {
    if (stop.load()) {
      idle.fetch_add(1);
      return;
    }
    slots[t].start = absl::Now();
    node->ProposeAsync(slots[t].data, [&, t](absl::StatusOr<ds::raft::Proposal> p) {
      if (!p.ok()) {
        // Not leader any more: this loop ends (counted), the run goes on.
        failures.fetch_add(1);
        idle.fetch_add(1);
        return;
      }
      app->OnApplied(p->index, [&, t, index = p->index, term = p->term] {
        if (app->TermAt(index) != term) {
          failures.fetch_add(1);
        } else if (measuring.load(std::memory_order_relaxed)) {
          slots[t].latencies_us.push_back(absl::ToInt64Microseconds(absl::Now() - slots[t].start));
        }
        propose(t);
      });
    });
  };
  for (int t = 0; t < proposers; ++t) {
    slots[t].data.assign(entry_bytes, static_cast<char>('a' + t % 26));
    propose(t);
  }
  // Log compaction as a replicated state machine would do it: snapshot at the
  // applied index (the light app has no state to save).
  std::atomic<bool> stop_snapshots{false};
  std::thread snapshotter([&] {
    const absl::Duration every = absl::GetFlag(FLAGS_snapshot_interval);
    if (every <= absl::ZeroDuration()) return;
    while (!stop_snapshots.load()) {
      absl::SleepFor(every);
      for (uint64_t id : c.ids()) {
        const uint64_t applied = c.node(id)->GetStatus().applied;
        if (applied > c.node(id)->GetStatus().snapshot_index) {
          c.node(id)->Snapshot(applied, "").IgnoreError();
        }
      }
    }
  });
  absl::SleepFor(warmup);
  const Totals before = SumSaves(c);
  const NodeStatus leader_before = c.node(leader)->GetStatus();
  const absl::Time t0 = absl::Now();
  measuring = true;
  absl::SleepFor(duration);
  measuring = false;
  const absl::Duration elapsed = absl::Now() - t0;
  const Totals after = SumSaves(c);
  const NodeStatus leader_after = c.node(leader)->GetStatus();
  stop = true;
  stop_snapshots = true;
  snapshotter.join();
  // Every loop ends at its next step; wait for all so nothing touches `slots`
  // after this frame.
  const absl::Time drain_deadline = absl::Now() + absl::Seconds(20);
  while (idle.load() < proposers && absl::Now() < drain_deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  if (idle.load() < proposers) {
    std::fprintf(stderr, "proposers did not drain\n");
    std::_Exit(1);
  }

  std::vector<int64_t> all;
  for (auto& s : slots) all.insert(all.end(), s.latencies_us.begin(), s.latencies_us.end());
  std::sort(all.begin(), all.end());
  const double commits = static_cast<double>(all.size());
  auto pct = [&](double q) {
    return all.empty()
               ? 0.0
               : all[std::min(all.size() - 1, static_cast<size_t>(q * all.size()))] / 1000.0;
  };
  const double seconds = absl::ToDoubleSeconds(elapsed);
  const double leader_fsyncs = leader_after.synced_saves - leader_before.synced_saves;
  const double all_fsyncs = after.synced_saves - before.synced_saves;
  std::printf(
      "proposers=%d entry_bytes=%d duration=%.1fs commits=%.0f commits/s=%.0f "
      "p50_ms=%.2f p99_ms=%.2f fsyncs/entry(leader)=%.4f entries/fsync(leader)=%.1f "
      "fsyncs/entry(3 replicas)=%.4f failures=%llu leader_changed=%d\n",
      proposers, entry_bytes, seconds, commits, commits / seconds, pct(0.50), pct(0.99),
      commits > 0 ? leader_fsyncs / commits : 0.0,
      leader_fsyncs > 0 ? commits / leader_fsyncs : 0.0, commits > 0 ? all_fsyncs / commits : 0.0,
      static_cast<unsigned long long>(failures.load()),
      leader_after.term != leader_before.term ? 1 : 0);
  return 0;
}
