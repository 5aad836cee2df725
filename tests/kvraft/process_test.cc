// Multi-process tests of kvraft-server: real binaries on loopback, killed with
// SIGKILL, paused with SIGSTOP, restarted; the client history must be
// linearizable and every acknowledged Append present exactly once. Then what a
// write costs (a one-shot kvctl put is one log entry) and the session table's
// bounds as clients see them on the wire (--max-sessions, the watermark).
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/health.grpc.pb.h"
#include "proto/kv.grpc.pb.h"
#include "raft/rsm/session_table.h"
#include "tests/kvraft/process_cluster.h"
#include "tests/lincheck/linearizability.h"

namespace ds::kv {
namespace {

// A file's contents, "" if it cannot be read (logs and outputs in messages).
std::string ReadLog(const std::string& path) { return common::ReadWholeFile(path).value_or(""); }

using testing::kKvServer;
using testing::KvWorkload;
using testing::NewKvClerk;
using testing::ProcessCluster;

// Raft timing for tests: elections within about a second.
const std::vector<std::string> kFastRaft = {"--tick-interval=50ms", "--election-ticks=10",
                                            "--log-level=warn"};

void CheckHistory(KvWorkload& w, ProcessCluster&) {
  testing::ExpectLinearizable(w.history().Snapshot());
}

void CheckAppends(KvWorkload& w, ProcessCluster& cluster) {
  testing::ExpectAppendsExactlyOnce(w.appends(), testing::KvReader(cluster));
}

TEST(KvraftProcess, LeaderKilledInALoop) {
  ProcessCluster cluster(kKvServer, 3, kFastRaft);
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  KvWorkload w(cluster, 4, 3);
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
                                  << cluster.LogTail(0);
  CheckHistory(w, cluster);
  CheckAppends(w, cluster);
}

TEST(KvraftProcess, FiveReplicasRandomKillsAndPauses) {
  ProcessCluster cluster(kKvServer, 5, kFastRaft);
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  KvWorkload w(cluster, 4, 3);
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
  ProcessCluster cluster(kKvServer, 3, kFastRaft);
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  auto clerk = NewKvClerk(cluster, absl::Seconds(20));
  for (int i = 0; i < 50; ++i)
    ASSERT_TRUE(clerk->Put(absl::StrCat("key", i), absl::StrCat("v", i)).ok());
  ASSERT_TRUE(clerk->Append("key0", "+x").ok());
  for (int i = 0; i < 3; ++i) cluster.Restart(i);  // kill -9 each, start again
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  auto fresh = NewKvClerk(cluster, absl::Seconds(20));
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
  ProcessCluster cluster(kKvServer, 3,
                         {"--tick-interval=50ms", "--election-ticks=10", "--log-level=warn",
                          "--snapshot-threshold-bytes=20000",
                          // 100 of the 400 entries it misses stay in the log.
                          "--snapshot-catchup-entries=100"});
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  auto clerk = NewKvClerk(cluster, absl::Seconds(20));
  ASSERT_TRUE(clerk->Put("warm", "up").ok());
  int leader = cluster.Leader();
  ASSERT_GE(leader, 0);
  int lagging = (leader + 1) % 3;
  cluster.Kill(lagging);
  const std::string value(200, 'x');
  for (int i = 0; i < 400; ++i) ASSERT_TRUE(clerk->Put(absl::StrCat("k", i % 50), value).ok());
  ASSERT_TRUE(clerk->Put("last", "1").ok());
  auto leader_status = cluster.Status(leader);
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
    auto st = cluster.Status(lagging);
    if (st.ok()) applied = st->applied_index();
    if (applied >= leader_status->commit_index()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_GE(applied, leader_status->commit_index()) << cluster.LogTail(lagging);
}

// The health service's answer at `endpoint` ("" service): SERVING,
// NOT_SERVING, or the RPC's error.
std::string HealthAt(const std::string& endpoint) {
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status st = stub->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp);
  if (!st.ok()) return st.error_message();
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
}

// Health means "state restored and a leader known": a replica left alone
// turns NOT_SERVING (it knows no leader once its election timeout passes),
// and SERVING again when its peers are back.
// A replica that lost its data directory and comes back under its old id has
// forgotten its votes and log: its peers refuse its Raft traffic (it could
// otherwise help elect a leader without committed entries), so it counts for
// nothing, and both sides log why.
TEST(KvraftProcess, ReplicaBackWithAnEmptyDataDirectoryUnderItsOldIdIsRefused) {
  ProcessCluster cluster(kKvServer, 3, kFastRaft);
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  auto clerk = NewKvClerk(cluster, absl::Seconds(20));
  ASSERT_TRUE(clerk->Put("k", "v1").ok());
  cluster.Kill(2);
  std::error_code ec;
  std::filesystem::remove_all(cluster.data_dir(2), ec);
  ASSERT_FALSE(ec) << ec.message();
  cluster.Start(2);
  // Its peers refuse it, and it says so.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline &&
         ReadLog(cluster.log_path(2)).find("refuses this replica") == std::string::npos) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_NE(ReadLog(cluster.log_path(2)).find("comes back with another data directory"),
            std::string::npos)
      << cluster.LogTail(2);
  // It refuses its peers' calls too (they know its old incarnation), so a
  // heartbeat's commit index never stops it as a corrupt log: it keeps
  // running and explains.
  EXPECT_NE(ReadLog(cluster.log_path(2)).find("is not the one member"), std::string::npos)
      << cluster.LogTail(2);
  EXPECT_TRUE(cluster.running(2)) << cluster.LogTail(2);
  // The group works on; but without replica 2 the wiped replica 3 is no help:
  // nothing commits.
  ASSERT_TRUE(clerk->Put("k", "v2").ok());
  cluster.Kill(1);
  auto quick = NewKvClerk(cluster, absl::Seconds(4));
  EXPECT_FALSE(quick->Put("k", "v3").ok());
  // Replica 2 back: a majority that remembers everything.
  cluster.Start(1);
  auto after = NewKvClerk(cluster, absl::Seconds(20));
  auto r = after->Get("k");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->value == "v2" || r->value == "v3") << r->value;
}

TEST(KvraftProcess, HealthyOnlyWhileALeaderIsKnown) {
  ProcessCluster cluster(kKvServer, 3, kFastRaft);
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(HealthAt(cluster.endpoints()[i]), "SERVING");
  cluster.Kill(1);
  cluster.Kill(2);
  std::string health;
  for (absl::Time deadline = absl::Now() + absl::Seconds(10); absl::Now() < deadline;) {
    health = HealthAt(cluster.endpoints()[0]);
    if (health == "NOT_SERVING") break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(health, "NOT_SERVING") << cluster.LogTail(0);
  cluster.Start(1);
  cluster.Start(2);
  EXPECT_TRUE(cluster.WaitHealthy(0).ok()) << cluster.LogTail(0);
  EXPECT_TRUE(cluster.WaitAllHealthy().ok());
}

TEST(KvraftProcess, GracefulShutdownOnSigterm) {
  ProcessCluster cluster(kKvServer, 1, kFastRaft);
  ASSERT_TRUE(cluster.WaitHealthy(0).ok());
  auto clerk = NewKvClerk(cluster, absl::Seconds(10));
  ASSERT_TRUE(clerk->Put("a", "1").ok());
  EXPECT_EQ(cluster.Terminate(0), 0);
  cluster.Start(0);
  ASSERT_TRUE(cluster.WaitHealthy(0).ok());
  auto r = clerk->Get("a");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value, "1");
}

// ---- what a write costs, and the session table on the wire ----

// The group once it is quiet: one leader, every replica on the same term and
// commit index with everything applied, unchanged over two looks 200 ms apart.
struct QuietGroup {
  int leader = -1;
  rsm::pb::StatusResponse status;  // the leader's
};

// One look at the group: nullopt unless it is quiet.
std::optional<QuietGroup> LookQuiet(ProcessCluster& cluster) {
  QuietGroup group;
  std::vector<rsm::pb::StatusResponse> all;
  for (int i = 0; i < cluster.size(); ++i) {
    auto st = cluster.Status(i);
    if (!st.ok() || st->applied_index() != st->commit_index()) return std::nullopt;
    if (st->role() == rsm::pb::ROLE_LEADER) {
      if (group.leader >= 0) return std::nullopt;  // two leaders (of different terms)
      group = {i, *st};
    }
    all.push_back(*st);
  }
  if (group.leader < 0) return std::nullopt;
  for (const rsm::pb::StatusResponse& st : all) {
    if (st.term() != group.status.term() || st.commit_index() != group.status.commit_index()) {
      return std::nullopt;
    }
  }
  return group;
}

std::optional<QuietGroup> WaitQuiet(ProcessCluster& cluster, absl::Duration limit) {
  std::optional<QuietGroup> previous;
  const absl::Time deadline = absl::Now() + limit;
  while (absl::Now() < deadline) {
    std::optional<QuietGroup> now = LookQuiet(cluster);
    if (now && previous && previous->leader == now->leader &&
        previous->status.term() == now->status.term() &&
        previous->status.commit_index() == now->status.commit_index()) {
      return now;
    }
    previous = now;
    absl::SleepFor(absl::Milliseconds(200));
  }
  return std::nullopt;
}

TEST(KvraftProcess, OneShotKvctlPutCostsOneLogEntry) {
  // Slower elections than kFastRaft: an election during the measurement adds
  // the new leader's no-op entry (the test then measures again).
  ProcessCluster cluster(kKvServer, 3,
                         {"--tick-interval=50ms", "--election-ticks=20", "--log-level=warn"});
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  ASSERT_GE(cluster.WaitForLeader(), 0);
  bool measured = false;
  for (int attempt = 0; attempt < 3 && !measured; ++attempt) {
    std::optional<QuietGroup> before = WaitQuiet(cluster, absl::Seconds(20));
    ASSERT_TRUE(before.has_value()) << "the group never became quiet";
    const std::string key = absl::StrCat("kvctl-key-", attempt);
    const std::string out = absl::StrCat(cluster.dir(), "/kvctl-", attempt, ".out");
    auto kvctl = common::Subprocess::Start(
        {.argv = {common::BinaryPath("kvctl"), "--endpoints=" + cluster.endpoints_flag(),
                  "--timeout=20s", "put", key, "one-entry"},
         .log_path = out});
    ASSERT_TRUE(kvctl.ok()) << kvctl.status();
    const std::optional<int> exit_status = (*kvctl)->WaitFor(absl::Seconds(40));
    ASSERT_TRUE(exit_status.has_value()) << "kvctl did not finish";
    ASSERT_EQ(*exit_status, 0) << ReadLog(out);
    EXPECT_NE(ReadLog(out).find("OK"), std::string::npos) << ReadLog(out);

    std::optional<QuietGroup> after = WaitQuiet(cluster, absl::Seconds(20));
    ASSERT_TRUE(after.has_value()) << "the group never became quiet again";
    if (after->leader != before->leader || after->status.term() != before->status.term()) {
      continue;  // an election came in between: its no-op entry spoils the count
    }
    measured = true;
    EXPECT_EQ(after->status.commit_index(), before->status.commit_index() + 1)
        << "a one-shot put should append exactly one entry (its session is opened by it)";
    EXPECT_EQ(after->status.applied_index(), before->status.applied_index() + 1);
    auto read = NewKvClerk(cluster, absl::Seconds(20))->Get(key);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(read->value, "one-entry");
  }
  EXPECT_TRUE(measured) << "every attempt crossed a leader election";
}

// One unary call's outcome as the wire carried it.
struct WireReply {
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  std::string message;
  int64_t session_watermark = 0;  // trailer "ds-session-watermark" (0: absent)
};

std::string Trailer(const grpc::ClientContext& ctx, const std::string& name) {
  const auto& trailers = ctx.GetServerTrailingMetadata();
  auto it = trailers.find(name);
  return it == trailers.end() ? "" : std::string(it->second.data(), it->second.size());
}

// Makes the call `call(stub, ctx)` at the leader, and again (the same request:
// a retry, deduplicated by its session) while the answer is UNAVAILABLE or
// DEADLINE_EXCEEDED, that is while leadership moves, for up to 30 s.
template <typename Call>
WireReply CallLeader(ProcessCluster& cluster, Call call) {
  WireReply reply{grpc::StatusCode::UNAVAILABLE, "no leader"};
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    const int leader = cluster.WaitForLeader();
    if (leader < 0) break;
    auto stub = pb::KvService::NewStub(
        grpc::CreateChannel(cluster.endpoints()[leader], grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    const grpc::Status st = call(*stub, ctx);
    reply = {st.error_code(), st.error_message(), 0};
    if (!absl::SimpleAtoi(Trailer(ctx, "ds-session-watermark"), &reply.session_watermark)) {
      reply.session_watermark = 0;
    }
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE &&
        st.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return reply;
}

WireReply Put(ProcessCluster& cluster, const rsm::pb::SessionRef& session, const std::string& key,
              const std::string& value) {
  pb::PutRequest req;
  req.set_key(key);
  req.set_value(value);
  *req.mutable_session() = session;
  return CallLeader(cluster, [&](pb::KvService::Stub& stub, grpc::ClientContext& ctx) {
    pb::PutResponse resp;
    return stub.Put(&ctx, req, &resp);
  });
}

WireReply Append(ProcessCluster& cluster, const rsm::pb::SessionRef& session,
                 const std::string& key, const std::string& value) {
  pb::AppendRequest req;
  req.set_key(key);
  req.set_value(value);
  *req.mutable_session() = session;
  return CallLeader(cluster, [&](pb::KvService::Stub& stub, grpc::ClientContext& ctx) {
    pb::AppendResponse resp;
    return stub.Append(&ctx, req, &resp);
  });
}

// `key`'s value read at the leader (linearizable); nullopt: not found.
std::optional<std::string> Read(ProcessCluster& cluster, const std::string& key) {
  pb::GetRequest req;
  req.set_key(key);
  pb::GetResponse resp;
  const WireReply r = CallLeader(cluster, [&](pb::KvService::Stub& stub, grpc::ClientContext& ctx) {
    resp.Clear();
    return stub.Get(&ctx, req, &resp);
  });
  EXPECT_EQ(r.code, grpc::StatusCode::OK) << "Get " << key << ": " << r.message;
  if (!resp.found()) return std::nullopt;
  return resp.value();
}

// Waits until every replica has applied what the leader had committed.
::testing::AssertionResult AllReplicasCaughtUp(ProcessCluster& cluster) {
  const int leader = cluster.WaitForLeader();
  if (leader < 0) return ::testing::AssertionFailure() << "no leader";
  auto leader_status = cluster.Status(leader);
  if (!leader_status.ok()) return ::testing::AssertionFailure() << leader_status.status();
  const uint64_t target = leader_status->commit_index();
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  for (int i = 0; i < cluster.size(); ++i) {
    while (true) {
      auto st = cluster.Status(i);
      if (st.ok() && st->applied_index() >= target) break;
      if (absl::Now() > deadline) {
        return ::testing::AssertionFailure() << "replica " << i + 1 << " did not apply " << target;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
  return ::testing::AssertionSuccess();
}

std::vector<std::string> WithFlags(std::vector<std::string> more) {
  std::vector<std::string> flags = kFastRaft;
  flags.insert(flags.end(), more.begin(), more.end());
  return flags;
}

TEST(KvraftProcess, MaxSessionsBoundsTheTableByEvictingTheLeastRecentlyUsed) {
  ProcessCluster cluster(kKvServer, 3, WithFlags({"--max-sessions=2"}));
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  // Ids in the order of first use: if two sessions were last active at the
  // same logical time (a new leader whose clock is behind), the lower id goes
  // first, so A is evicted either way.
  const int64_t now = absl::ToUnixMicros(absl::Now());
  const uint64_t a = 0xA000'0001, b = 0xB000'0002, c = 0xC000'0003;
  const int64_t a_created = now - 3000, b_created = now - 2000, c_created = now - 1000;
  ASSERT_EQ(Append(cluster, rsm::MakeSessionRef(a, a_created, 1), "lru-a", "a1;").code,
            grpc::StatusCode::OK);
  const rsm::pb::SessionRef a_latest = rsm::MakeSessionRef(a, a_created, 2);
  ASSERT_EQ(Append(cluster, a_latest, "lru-a", "a2;").code, grpc::StatusCode::OK);
  const rsm::pb::SessionRef b_latest = rsm::MakeSessionRef(b, b_created, 1);
  ASSERT_EQ(Append(cluster, b_latest, "lru-b", "b1;").code, grpc::StatusCode::OK);
  // A third session: the table evicts A, the least recently used.
  ASSERT_EQ(Append(cluster, rsm::MakeSessionRef(c, c_created, 1), "lru-c", "c1;").code,
            grpc::StatusCode::OK);

  // A's latest command again (a retry): its session is gone, so its outcome
  // cannot be told; refused, with the watermark for the client's next session.
  const WireReply retry = Append(cluster, a_latest, "lru-a", "a2;");
  EXPECT_EQ(retry.code, grpc::StatusCode::ABORTED) << retry.message;
  EXPECT_EQ(retry.session_watermark, a_created)
      << "ds-session-watermark should carry the evicted session's creation time";
  EXPECT_EQ(Read(cluster, "lru-a"), "a1;a2;");

  ASSERT_TRUE(AllReplicasCaughtUp(cluster));
  for (int i = 0; i < cluster.size(); ++i) {
    auto st = cluster.Status(i);
    ASSERT_TRUE(st.ok()) << st.status();
    EXPECT_LE(st->sessions(), 2u) << "replica " << i + 1;
    EXPECT_EQ(st->sessions(), 2u) << "replica " << i + 1 << " should hold B and C";
  }

  // B was not evicted: its retry gets the cached answer, not a second append.
  const WireReply b_retry = Append(cluster, b_latest, "lru-b", "b1;");
  EXPECT_EQ(b_retry.code, grpc::StatusCode::OK) << b_retry.message;
  EXPECT_EQ(Read(cluster, "lru-b"), "b1;");
}

TEST(KvraftProcess, UnknownSessionCreatedAtOrBeforeTheWatermarkIsRefusedEvenAtSequenceOne) {
  ProcessCluster cluster(kKvServer, 3, WithFlags({"--max-sessions=1"}));
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  const int64_t a_created = absl::ToUnixMicros(absl::Now()) - 2000;
  ASSERT_EQ(Put(cluster, rsm::MakeSessionRef(0xA1, a_created, 1), "wm-a", "a").code,
            grpc::StatusCode::OK);
  // B's session evicts A's: the watermark is now A's creation time.
  ASSERT_EQ(Put(cluster, rsm::MakeSessionRef(0xB2, a_created + 1000, 1), "wm-b", "b").code,
            grpc::StatusCode::OK);

  // Sessions the servers never saw, created at and before the watermark: the
  // first command of a session forgotten since looks just like them.
  for (const int64_t created : {a_created, a_created - 1000}) {
    const WireReply r = Put(cluster, rsm::MakeSessionRef(0xD3, created, 1), "wm-d", "d");
    EXPECT_EQ(r.code, grpc::StatusCode::ABORTED) << "created " << created << ": " << r.message;
    EXPECT_EQ(r.session_watermark, a_created);
  }
  EXPECT_FALSE(Read(cluster, "wm-d").has_value()) << "a refused write was applied";

  // A session created after the watermark is new.
  const WireReply fresh =
      Put(cluster, rsm::MakeSessionRef(0xE4, absl::ToUnixMicros(absl::Now()), 1), "wm-e", "e");
  EXPECT_EQ(fresh.code, grpc::StatusCode::OK) << fresh.message;
  EXPECT_EQ(Read(cluster, "wm-e"), "e");
}

TEST(KvraftProcess, SessionsAndTheWatermarkSurviveARestartFromASnapshot) {
  ProcessCluster cluster(kKvServer, 1,
                         WithFlags({"--max-sessions=1", "--snapshot-threshold-bytes=4000"}));
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  const int64_t a_created = absl::ToUnixMicros(absl::Now()) - 2000;
  const rsm::pb::SessionRef a1 = rsm::MakeSessionRef(0xA1, a_created, 1);
  ASSERT_EQ(Append(cluster, a1, "snap-a", "a;").code, grpc::StatusCode::OK);
  // B's session evicts A's; B's writes fill the log past the snapshot threshold.
  rsm::pb::SessionRef b = rsm::MakeSessionRef(0xB2, a_created + 1000, 0);
  for (int i = 0; i < 40; ++i) {
    b.set_sequence(b.sequence() + 1);
    ASSERT_EQ(Append(cluster, b, "snap-b", absl::StrCat(std::string(200, 'x'), ";")).code,
              grpc::StatusCode::OK);
  }
  auto before = cluster.Status(0);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_GT(before->snapshot_index(), 0u) << "no snapshot was taken";

  cluster.Restart(0);  // kill -9: the table comes back from the snapshot and the log
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  auto after = cluster.Status(0);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->sessions(), 1u);
  const WireReply a_retry = Append(cluster, a1, "snap-a", "a;");
  EXPECT_EQ(a_retry.code, grpc::StatusCode::ABORTED) << a_retry.message;
  EXPECT_EQ(a_retry.session_watermark, a_created);
  const WireReply b_retry = Append(cluster, b, "snap-b", "retried;");
  EXPECT_EQ(b_retry.code, grpc::StatusCode::OK) << b_retry.message;
  const std::optional<std::string> b_value = Read(cluster, "snap-b");
  ASSERT_TRUE(b_value.has_value());
  EXPECT_EQ(b_value->size(), 40 * 201u) << "B's retry was applied again after the restart";
  EXPECT_EQ(Read(cluster, "snap-a"), "a;");
}

}  // namespace
}  // namespace ds::kv
