// Multi-process tests of the Batch-stream client (client/kv_stream.h) against
// real kvraft-server processes: AsyncClerk semantics and sessions, many
// sessions over few connections, a killed and a paused leader (histories
// checked for linearizability, appends for exactly-once), a blackholed
// endpoint, and KvConnection's and KvPool's failure paths. (KvService.Batch
// as the server serves it is tested in tests/kvraft/batch_test.cc.)
#include "client/kv_stream.h"

#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/clerk.h"
#include "gtest/gtest.h"
#include "tests/client/unreachable_endpoint.h"
#include "tests/common/kv_checks.h"
#include "tests/common/process_cluster.h"
#include "tests/lincheck/linearizability.h"

namespace ds::client {
namespace {

using ds::testing::ProcessCluster;
using kv::pb::KvRequest;
using kv::pb::KvResponse;
using lincheck::HistoryRecorder;
using lincheck::OpKind;

constexpr char kServer[] = "kvraft-server";

// Raft timing for tests: elections within about a second.
const std::vector<std::string> kFastRaft = {"--tick-interval=50ms", "--election-ticks=10",
                                            "--log-level=warn"};

// How long after its deadline a callback may still come before the test calls
// it a hang: the pool's timer period plus scheduling delays under ASan on a
// loaded 2-core machine.
constexpr absl::Duration kCallbackSlack = absl::Seconds(2);

absl::StatusCode CodeOf(const KvResponse& r) {
  return static_cast<absl::StatusCode>(r.status().code());
}

// One healthy 3-replica cluster for the tests that neither kill, pause nor
// restart a replica (each uses keys of its own); started at first use, killed
// and removed at exit.
ProcessCluster& HealthyCluster() {
  static const std::unique_ptr<ProcessCluster> cluster = [] {
    auto c = std::make_unique<ProcessCluster>(kServer, 3, kFastRaft);
    if (absl::Status st = c->WaitAllHealthy(); !st.ok()) ADD_FAILURE() << st;
    return c;
  }();
  return *cluster;
}

// SIGSTOPs replica `i` and waits until it has surely stopped: the signal is
// delivered asynchronously, and a replica thread already running may still
// answer a request sent right after kill(2) returns.
void PauseAndSettle(ProcessCluster& cluster, int i) {
  cluster.Pause(i);
  absl::SleepFor(absl::Milliseconds(200));
}

ClerkOptions Options(const ProcessCluster& cluster, absl::Duration operation_timeout) {
  return {.endpoints = cluster.endpoints(),
          .operation_timeout = operation_timeout,
          .attempt_timeout = absl::Milliseconds(500)};
}

// The outcome of one asynchronous call, shared with its callback so that a
// callback that comes after the test stopped waiting writes into live memory.
template <typename T>
struct CallResult {
  absl::Mutex mu;
  std::optional<T> value ABSL_GUARDED_BY(mu);
  int calls ABSL_GUARDED_BY(mu) = 0;
};

// A callback that records its first value into `r` (and counts every call).
template <typename T>
std::function<void(T)> RecordInto(std::shared_ptr<CallResult<T>> r) {
  return [r](T v) {
    absl::MutexLock lock(&r->mu);
    if (++r->calls == 1) r->value = std::move(v);
  };
}

// Waits up to `limit` for the callback recording into `r`. nullopt: no
// callback in time (a hang, or a call not yet answered).
template <typename T>
std::optional<T> AwaitResult(CallResult<T>& r, absl::Duration limit) {
  absl::MutexLock lock(&r.mu);
  r.mu.AwaitWithTimeout(absl::Condition(
                            +[](int* calls) { return *calls > 0; }, &r.calls),
                        limit);
  EXPECT_LE(r.calls, 1) << "a callback ran more than once";
  return r.value;
}

// Starts a call with `start(callback)` and waits up to `limit` for its
// callback. nullopt: no callback in time (a hang).
template <typename T, typename Start>
std::optional<T> Await(Start start, absl::Duration limit) {
  auto r = std::make_shared<CallResult<T>>();
  start(RecordInto(r));
  return AwaitResult(*r, limit);
}

// Sends `request` on `conn` with a deadline `timeout` from now without
// waiting; its answer lands in the result (AwaitResult), which the callback
// keeps alive however late it comes.
std::shared_ptr<CallResult<KvResponse>> SendLater(KvConnection* conn, KvRequest request,
                                                  absl::Duration timeout) {
  auto r = std::make_shared<CallResult<KvResponse>>();
  conn->Send(std::move(request), absl::Now() + timeout, RecordInto(r));
  return r;
}

// Sends `request` on `conn` with a deadline `timeout` from now and waits for
// its answer (nullopt: none by the deadline plus slack).
std::optional<KvResponse> SendAndWait(KvConnection* conn, KvRequest request,
                                      absl::Duration timeout) {
  return Await<KvResponse>(
      [&](KvConnection::Callback cb) {
        conn->Send(std::move(request), absl::Now() + timeout, std::move(cb));
      },
      timeout + kCallbackSlack);
}

KvRequest MakeGet(std::string key) {
  KvRequest r;
  r.mutable_get()->set_key(std::move(key));
  return r;
}

// An AsyncClerk used one call at a time from the test thread.
class BlockingClerk {
 public:
  BlockingClerk(ClerkOptions options, std::shared_ptr<KvPool> pool)
      : limit_(options.operation_timeout + kCallbackSlack), clerk_(options, std::move(pool), 0) {}

  absl::StatusOr<GetResult> Get(std::string key) {
    return Result(Await<absl::StatusOr<GetResult>>(
        [&](auto cb) { clerk_.Get(std::move(key), std::move(cb)); }, limit_));
  }
  absl::Status Put(std::string key, std::string value) {
    return Result(Await<absl::Status>(
        [&](auto cb) { clerk_.Put(std::move(key), std::move(value), std::move(cb)); }, limit_));
  }
  absl::Status Append(std::string key, std::string value) {
    return Result(Await<absl::Status>(
        [&](auto cb) { clerk_.Append(std::move(key), std::move(value), std::move(cb)); }, limit_));
  }
  absl::StatusOr<bool> Delete(std::string key) {
    return Result(Await<absl::StatusOr<bool>>(
        [&](auto cb) { clerk_.Delete(std::move(key), std::move(cb)); }, limit_));
  }
  SessionState session() const { return clerk_.session(); }

 private:
  template <typename T>
  T Result(std::optional<T> r) {
    if (!r) return absl::InternalError("the callback never came");
    return std::move(*r);
  }

  const absl::Duration limit_;
  AsyncClerk clerk_;
};

// AsyncClerks over one pool, each running one operation at a time, the next
// started from the previous one's callback (as kvbench does): Appends of
// unique tokens "c<client>.<n>;" to keys "<prefix>a<k>" (so a duplicate or a
// lost append shows) and Gets of the same keys, all recorded for the
// linearizability checker.
class AsyncWorkload {
 public:
  struct Options {
    std::string key_prefix;
    int clients = 10;
    int keys = 4;
    int ops_per_client = 0;  // 0: until Finish(); else Wait() for them
    ClerkOptions clerk;
  };

  struct Outcome {
    absl::Time call;
    absl::Time ret;
    absl::StatusCode code;
  };

  AsyncWorkload(std::shared_ptr<KvPool> pool, Options options) : options_(std::move(options)) {
    for (int c = 0; c < options_.clients; ++c) {
      clients_.push_back(std::make_unique<Client>(options_.clerk, pool, c));
    }
    for (int c = 0; c < options_.clients; ++c) Next(c);
  }

  // Waits up to `limit` for every client to finish its operations (a fixed
  // number of them: ops_per_client). False: some callback never came.
  bool Wait(absl::Duration limit) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(this, &AsyncWorkload::AllFinished), limit);
  }

  // Stops starting operations and waits as Wait() for the last ones.
  bool Finish(absl::Duration limit) {
    stop_ = true;
    return Wait(limit);
  }

  ~AsyncWorkload() {
    if (!Finish(absl::Seconds(30))) {
      // Freeing the clerks now would let the late callbacks use freed memory.
      std::fprintf(stderr, "AsyncWorkload: operations still in flight after 30 s\n");
      std::abort();
    }
  }

  HistoryRecorder& history() { return history_; }
  int clients() const { return options_.clients; }
  SessionState session(int c) const { return clients_[c]->clerk.session(); }
  int duplicate_callbacks() const { return duplicate_callbacks_.load(); }
  std::vector<Outcome> outcomes() {
    absl::MutexLock lock(&mu_);
    return outcomes_;
  }
  // "key/token" -> acknowledged?
  std::map<std::string, bool> appends() {
    absl::MutexLock lock(&mu_);
    return appends_;
  }

 private:
  struct Client {
    Client(ClerkOptions options, std::shared_ptr<KvPool> pool, int c)
        : clerk(std::move(options), std::move(pool), c), rng(1000 + c) {}
    AsyncClerk clerk;
    std::mt19937 rng;  // used only by the client's own chain of operations
    int started = 0;
  };

  bool AllFinished() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return finished_ == options_.clients;
  }

  void Next(int c) {
    Client& cl = *clients_[c];
    if (stop_ || (options_.ops_per_client > 0 && cl.started == options_.ops_per_client)) {
      absl::MutexLock lock(&mu_);
      ++finished_;
      return;
    }
    const int n = cl.started++;
    const std::string key = absl::StrCat(options_.key_prefix, "a", cl.rng() % options_.keys);
    const absl::Time call = absl::Now();
    // Counts this operation's callbacks: the first one counts, a second is an error.
    auto calls = std::make_shared<std::atomic<int>>(0);
    if (cl.rng() % 10 < 4) {
      const HistoryRecorder::Handle h = history_.Begin(c, OpKind::kGet, key);
      cl.clerk.Get(key, [this, c, h, call, calls](absl::StatusOr<GetResult> r) {
        if (calls->fetch_add(1) > 0) {
          ++duplicate_callbacks_;
          return;
        }
        if (r.ok()) {
          history_.End(h, r->value, r->found);
        } else {
          history_.Discard(h);  // a failed read has no effect
        }
        Done(c, call, r.status());
      });
      return;
    }
    const std::string token = absl::StrCat("c", c, ".", n, ";");
    {
      absl::MutexLock lock(&mu_);
      appends_[key + "/" + token] = false;
    }
    const HistoryRecorder::Handle h = history_.Begin(c, OpKind::kAppend, key, token);
    cl.clerk.Append(key, token, [this, c, h, call, calls, key, token](absl::Status st) {
      if (calls->fetch_add(1) > 0) {
        ++duplicate_callbacks_;
        return;
      }
      if (st.ok()) {
        history_.End(h);
        absl::MutexLock lock(&mu_);
        appends_[key + "/" + token] = true;
      }
      // else: the outcome is unknown; the operation stays open in the history.
      Done(c, call, st);
    });
  }

  void Done(int c, absl::Time call, const absl::Status& st) {
    {
      absl::MutexLock lock(&mu_);
      outcomes_.push_back({call, absl::Now(), st.code()});
    }
    Next(c);
  }

  const Options options_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::atomic<bool> stop_{false};
  std::atomic<int> duplicate_callbacks_{0};
  HistoryRecorder history_;
  absl::Mutex mu_;
  int finished_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Outcome> outcomes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, bool> appends_ ABSL_GUARDED_BY(mu_);
};

void ExpectLinearizable(AsyncWorkload& w) {
  ds::testing::ExpectLinearizable(w.history().Snapshot());
}

// Reads the final values through a Clerk (the unary path).
void ExpectAppendsExactlyOnce(AsyncWorkload& w, ProcessCluster& cluster) {
  auto clerk = Clerk::Create({.endpoints = cluster.endpoints(),
                              .operation_timeout = absl::Seconds(20),
                              .attempt_timeout = absl::Milliseconds(500)});
  ASSERT_TRUE(clerk.ok()) << clerk.status();
  ds::testing::ExpectAppendsExactlyOnce(w.appends(),
                                        [&](const std::string& key) -> absl::StatusOr<std::string> {
                                          absl::StatusOr<GetResult> r = (*clerk)->Get(key);
                                          if (!r.ok()) return r.status();
                                          return r->value;
                                        });
}

// Operations that returned OK within [from, to].
int AcknowledgedBetween(const std::vector<AsyncWorkload::Outcome>& outcomes, absl::Time from,
                        absl::Time to) {
  int n = 0;
  for (const auto& o : outcomes) {
    if (o.code == absl::StatusCode::kOk && o.ret >= from && o.ret <= to) ++n;
  }
  return n;
}

// ---- AsyncClerk on a healthy cluster ----

TEST(AsyncClerk, PutAppendGetDeleteHaveClerkSemantics) {
  ProcessCluster& cluster = HealthyCluster();
  ASSERT_GE(cluster.WaitForLeader(), 0);
  BlockingClerk clerk(Options(cluster, absl::Seconds(10)),
                      std::make_shared<KvPool>(cluster.endpoints(), 1));

  ASSERT_TRUE(clerk.Put("semantics", "v1").ok());
  auto r = clerk.Get("semantics");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->found);
  EXPECT_EQ(r->value, "v1");

  ASSERT_TRUE(clerk.Append("semantics", "+2").ok());
  ASSERT_TRUE(clerk.Put("semantics", "v3").ok());  // Put replaces
  ASSERT_TRUE(clerk.Append("semantics", "+4").ok());
  r = clerk.Get("semantics");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value, "v3+4");

  auto existed = clerk.Delete("semantics");
  ASSERT_TRUE(existed.ok()) << existed.status();
  EXPECT_TRUE(*existed);
  existed = clerk.Delete("semantics");
  ASSERT_TRUE(existed.ok()) << existed.status();
  EXPECT_FALSE(*existed) << "a second delete found the key again";

  ASSERT_TRUE(clerk.Append("semantics", "fresh").ok());  // append to a missing key
  r = clerk.Get("semantics");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value, "fresh");
}

TEST(AsyncClerk, GetOfAMissingKeyIsNotFoundWithAnEmptyValue) {
  ProcessCluster& cluster = HealthyCluster();
  ASSERT_GE(cluster.WaitForLeader(), 0);
  BlockingClerk clerk(Options(cluster, absl::Seconds(10)),
                      std::make_shared<KvPool>(cluster.endpoints(), 1));
  auto r = clerk.Get("missing-never-written");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->found);
  EXPECT_EQ(r->value, "");
}

// What the leader reports (Replica.Status): to see what one operation cost.
struct LeaderView {
  int leader = -1;
  uint64_t term = 0;
  uint64_t applied_index = 0;
  uint64_t sessions = 0;
};

std::optional<LeaderView> ViewLeader(ProcessCluster& cluster) {
  const int leader = cluster.WaitForLeader();
  if (leader < 0) return std::nullopt;
  auto st = cluster.Status(leader);
  if (!st.ok()) return std::nullopt;
  return LeaderView{leader, st->term(), st->applied_index(), st->sessions()};
}

TEST(AsyncClerk, OpensItsSessionWithItsFirstWriteInOneLogEntryAndNotForReads) {
  ProcessCluster& cluster = HealthyCluster();
  // An election in the middle (a loaded machine) adds an entry of its own:
  // then measure again, with a new clerk.
  for (int attempt = 0; attempt < 3; ++attempt) {
    const std::string key = absl::StrCat("session-key-", attempt);
    std::optional<LeaderView> before = ViewLeader(cluster);
    ASSERT_TRUE(before.has_value()) << "no leader";
    BlockingClerk clerk(Options(cluster, absl::Seconds(10)),
                        std::make_shared<KvPool>(cluster.endpoints(), 1));
    const SessionState session = clerk.session();
    EXPECT_NE(session.client_id, 0u) << "the clerk picks its session id itself";
    ASSERT_TRUE(clerk.Get(key).ok());
    std::optional<LeaderView> after_get = ViewLeader(cluster);
    ASSERT_TRUE(clerk.Put(key, "x").ok());
    std::optional<LeaderView> after_put = ViewLeader(cluster);
    ASSERT_TRUE(clerk.Append(key, "y").ok());
    std::optional<LeaderView> after_append = ViewLeader(cluster);
    bool same_term = true;
    for (const auto& v : {after_get, after_put, after_append}) {
      same_term =
          same_term && v.has_value() && v->leader == before->leader && v->term == before->term;
    }
    if (!same_term) continue;
    EXPECT_EQ(after_get->applied_index, before->applied_index) << "a Get wrote to the log";
    EXPECT_EQ(after_get->sessions, before->sessions) << "a Get opened a session";
    EXPECT_EQ(after_put->applied_index, before->applied_index + 1)
        << "the first write and its session took more than one log entry";
    EXPECT_EQ(after_put->sessions, before->sessions + 1) << "the first write opened no session";
    EXPECT_EQ(after_append->applied_index, after_put->applied_index + 1);
    EXPECT_EQ(after_append->sessions, after_put->sessions) << "a second write opened a session";
    EXPECT_EQ(clerk.session().client_id, session.client_id);
    EXPECT_EQ(clerk.session().last_sequence, 2u);
    return;
  }
  FAIL() << "the leader changed during each of 3 attempts";
}

TEST(AsyncClerk, ResumesTheSessionOfAnotherClerk) {
  ProcessCluster& cluster = HealthyCluster();
  ASSERT_GE(cluster.WaitForLeader(), 0);
  auto unary = Clerk::Create(Options(cluster, absl::Seconds(10)));
  ASSERT_TRUE(unary.ok()) << unary.status();
  ASSERT_TRUE((*unary)->Append("resume-key", "a").ok());
  const SessionState saved = (*unary)->session();
  std::optional<LeaderView> before = ViewLeader(cluster);
  ASSERT_TRUE(before.has_value());

  ClerkOptions options = Options(cluster, absl::Seconds(10));
  options.session = saved;
  BlockingClerk resumed(options, std::make_shared<KvPool>(cluster.endpoints(), 1));
  ASSERT_TRUE(resumed.Append("resume-key", "b").ok());
  EXPECT_EQ(resumed.session().client_id, saved.client_id);
  EXPECT_EQ(resumed.session().last_sequence, saved.last_sequence + 1);
  std::optional<LeaderView> after = ViewLeader(cluster);
  ASSERT_TRUE(after.has_value());
  if (after->term == before->term) {
    EXPECT_EQ(after->sessions, before->sessions) << "resuming opened another session";
  }
  auto r = resumed.Get("resume-key");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value, "ab");
}

TEST(AsyncClerk, FortySessionsOverTwoConnectionsPerReplicaAreLinearizableAndExactlyOnce) {
  ProcessCluster& cluster = HealthyCluster();
  ASSERT_GE(cluster.WaitForLeader(), 0);
  auto pool = std::make_shared<KvPool>(cluster.endpoints(), 2);
  AsyncWorkload w(pool, {.key_prefix = "many-",
                         .clients = 40,
                         .keys = 8,
                         .ops_per_client = 25,
                         .clerk = Options(cluster, absl::Seconds(10))});
  ASSERT_TRUE(w.Wait(absl::Seconds(60))) << "operations still in flight";
  EXPECT_EQ(w.duplicate_callbacks(), 0);
  const std::vector<AsyncWorkload::Outcome> outcomes = w.outcomes();
  EXPECT_EQ(outcomes.size(), 40u * 25u);
  int failed = 0;
  for (const auto& o : outcomes) failed += o.code != absl::StatusCode::kOk;
  EXPECT_EQ(failed, 0) << "operations failed on a healthy cluster";
  std::set<uint64_t> sessions;
  std::string ids;
  for (int c = 0; c < w.clients(); ++c) {
    sessions.insert(w.session(c).client_id);
    absl::StrAppend(&ids, " ", w.session(c).client_id);
  }
  EXPECT_EQ(sessions.size(), 40u) << "clerks must not share sessions; ids:" << ids;
  ExpectLinearizable(w);
  ExpectAppendsExactlyOnce(w, cluster);
}

// ---- AsyncClerk while the leader fails ----

TEST(AsyncClerkFailover, LeaderKilledWhileWritingLosesAndDuplicatesNothing) {
  ProcessCluster cluster(kServer, 3, kFastRaft);
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  ASSERT_GE(cluster.WaitForLeader(), 0);
  auto pool = std::make_shared<KvPool>(cluster.endpoints(), 2);
  AsyncWorkload w(pool, {.clients = 10, .keys = 4, .clerk = Options(cluster, absl::Seconds(5))});
  for (int round = 0; round < 2; ++round) {
    absl::SleepFor(absl::Seconds(1));
    const int leader = cluster.WaitForLeader();
    ASSERT_GE(leader, 0);
    cluster.Kill(leader);  // kill -9
    const absl::Time killed = absl::Now();
    absl::SleepFor(absl::Milliseconds(2500));
    const absl::Time restarted = absl::Now();
    cluster.Start(leader);
    // From 0.5 s on, no answer of the killed leader can still be arriving.
    EXPECT_GT(AcknowledgedBetween(w.outcomes(), killed + absl::Milliseconds(500), restarted), 0)
        << "round " << round << ": nothing acknowledged while replica " << leader + 1
        << " was down";
  }
  absl::SleepFor(absl::Seconds(1));
  ASSERT_TRUE(w.Finish(absl::Seconds(5) + kCallbackSlack)) << "operations still in flight";
  EXPECT_EQ(w.duplicate_callbacks(), 0);
  ExpectLinearizable(w);
  ExpectAppendsExactlyOnce(w, cluster);
}

TEST(AsyncClerkFailover, PausedLeaderEndsEveryOperationByItsDeadline) {
  ProcessCluster cluster(kServer, 3, kFastRaft);
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  const int leader = cluster.WaitForLeader();
  ASSERT_GE(leader, 0);
  const absl::Duration op_timeout = absl::Seconds(3);
  auto pool = std::make_shared<KvPool>(cluster.endpoints(), 2);
  AsyncWorkload w(pool, {.clients = 8, .keys = 4, .clerk = Options(cluster, op_timeout)});
  absl::SleepFor(absl::Seconds(1));
  PauseAndSettle(cluster, leader);  // SIGSTOP: connections stay open, nothing answers
  const absl::Time paused = absl::Now();
  // Longer than an operation's deadline, so operations sent to the paused
  // leader must end by that deadline, not when it comes back.
  absl::SleepFor(op_timeout + absl::Seconds(2));
  const absl::Time resumed = absl::Now();
  cluster.Resume(leader);
  absl::SleepFor(absl::Seconds(1));
  ASSERT_TRUE(w.Finish(op_timeout + kCallbackSlack)) << "operations still in flight";
  EXPECT_EQ(w.duplicate_callbacks(), 0);

  absl::Duration longest;
  for (const auto& o : w.outcomes()) {
    longest = std::max(longest, o.ret - o.call);
    EXPECT_TRUE(o.code == absl::StatusCode::kOk || o.code == absl::StatusCode::kDeadlineExceeded)
        << o.code;
  }
  EXPECT_LE(longest, op_timeout + kCallbackSlack) << "an operation outlived its deadline";
  // From 0.5 s on, no answer the paused leader sent before it stopped can
  // still be arriving.
  EXPECT_GT(AcknowledgedBetween(w.outcomes(), paused + absl::Milliseconds(500), resumed), 0)
      << "no operation succeeded through another replica while the leader was paused";
  ExpectLinearizable(w);
}

// ---- A blackholed endpoint ----

TEST(KvPool, BlackholedFirstEndpointDelaysNeitherTheLeaderSearchNorTheDestructor) {
  ProcessCluster& cluster = HealthyCluster();
  ASSERT_GE(cluster.WaitForLeader(), 0);
  auto hole = client::testing::BlackholeEndpoint::Create();
  ASSERT_TRUE(hole.ok()) << hole.status();
  ASSERT_FALSE(client::testing::ConnectTime((*hole)->port(), absl::Milliseconds(300)).has_value())
      << "a connect to the blackhole finished: the test would prove nothing";
  std::vector<std::string> endpoints = {(*hole)->address()};
  for (const std::string& e : cluster.endpoints()) endpoints.push_back(e);
  auto pool = std::make_shared<KvPool>(endpoints, 1);
  // A probe of the blackhole hangs for the whole attempt timeout.
  ClerkOptions options = {.operation_timeout = absl::Seconds(20),
                          .attempt_timeout = absl::Seconds(5)};
  {
    BlockingClerk clerk(options, pool);
    const absl::Time start = absl::Now();
    ASSERT_TRUE(clerk.Put("blackhole-key", "v").ok());
    const absl::Duration took = absl::Now() - start;
    std::printf("  first put with a blackholed first endpoint: %s\n",
                absl::FormatDuration(took).c_str());
    EXPECT_LT(took, absl::Seconds(2)) << "waited for the blackhole's probe";
  }
  const absl::Time start = absl::Now();
  pool.reset();
  const absl::Duration took = absl::Now() - start;
  std::printf("  ~KvPool with a probe hanging on the blackhole: %s\n",
              absl::FormatDuration(took).c_str());
  EXPECT_LT(took, absl::Milliseconds(500)) << "~KvPool waited for the blackhole's probe";
}

// ---- KvConnection and KvPool against one replica ----

// A one-replica cluster that is up and leads itself.
::testing::AssertionResult SingleReplicaReady(ProcessCluster& cluster) {
  if (absl::Status st = cluster.WaitHealthy(0); !st.ok()) {
    return ::testing::AssertionFailure() << "replica not healthy: " << st;
  }
  if (int leader = cluster.WaitForLeader(); leader != 0) {
    return ::testing::AssertionFailure() << "no leader (got " << leader << ")";
  }
  return ::testing::AssertionSuccess();
}

// Opens `conn`'s stream with one Get and checks that it is answered OK.
::testing::AssertionResult StreamOpen(KvConnection* conn) {
  auto warm = SendAndWait(conn, MakeGet("k"), absl::Seconds(10));
  if (!warm.has_value()) return ::testing::AssertionFailure() << "no answer";
  if (CodeOf(*warm) != absl::StatusCode::kOk) {
    return ::testing::AssertionFailure()
           << "answered " << CodeOf(*warm) << ": " << warm->status().message();
  }
  return ::testing::AssertionSuccess();
}

TEST(KvConnection, RequestToAPausedReplicaExpiresAtItsDeadline) {
  ProcessCluster cluster(kServer, 1, kFastRaft);
  ASSERT_TRUE(SingleReplicaReady(cluster));
  KvPool pool(cluster.endpoints(), 1);
  KvConnection* conn = pool.connection(0, 0);
  ASSERT_TRUE(StreamOpen(conn));

  PauseAndSettle(cluster, 0);
  // A request with a far deadline goes first: the nearer deadline of the
  // next one must still be noticed (the timer skips connections whose
  // earliest deadline is not due), and the far one must not expire with it.
  auto far = SendLater(conn, MakeGet("k"), absl::Seconds(60));
  const absl::Time start = absl::Now();
  auto resp = SendAndWait(conn, MakeGet("k"), absl::Seconds(1));
  const absl::Duration took = absl::Now() - start;
  EXPECT_FALSE(AwaitResult(*far, absl::ZeroDuration()).has_value())
      << "a request expired 59 s before its deadline";
  cluster.Resume(0);
  ASSERT_TRUE(resp.has_value()) << "no answer 1 s + slack after the deadline";
  EXPECT_EQ(CodeOf(*resp), absl::StatusCode::kDeadlineExceeded) << resp->status().message();
  EXPECT_GE(took, absl::Milliseconds(950)) << "expired before its deadline";
  auto far_resp = AwaitResult(*far, absl::Seconds(20));
  ASSERT_TRUE(far_resp.has_value()) << "the far request was not answered after the replica resumed";
  EXPECT_EQ(CodeOf(*far_resp), absl::StatusCode::kOk) << far_resp->status().message();
}

TEST(KvConnection, RequestInFlightFailsUnavailableWhenTheReplicaIsKilled) {
  ProcessCluster cluster(kServer, 1, kFastRaft);
  ASSERT_TRUE(SingleReplicaReady(cluster));
  KvPool pool(cluster.endpoints(), 1);
  KvConnection* conn = pool.connection(0, 0);
  ASSERT_TRUE(StreamOpen(conn));

  // Paused first, so the request is surely in flight (sent, unanswered) when
  // the process dies; its deadline is far away, so only the broken stream can
  // end it in time.
  PauseAndSettle(cluster, 0);
  auto in_flight = SendLater(conn, MakeGet("k"), absl::Seconds(60));
  absl::SleepFor(absl::Milliseconds(300));
  cluster.Kill(0);
  auto killed = AwaitResult(*in_flight, absl::Seconds(10));
  ASSERT_TRUE(killed.has_value()) << "the request outlived its replica";
  EXPECT_EQ(CodeOf(*killed), absl::StatusCode::kUnavailable) << killed->status().message();

  // A request sent after the kill fails too (no replica to connect to) rather
  // than waiting forever for the stream.
  auto after = SendAndWait(conn, MakeGet("k"), absl::Seconds(5));
  ASSERT_TRUE(after.has_value()) << "a request to a dead replica hung";
  EXPECT_TRUE(CodeOf(*after) == absl::StatusCode::kUnavailable ||
              CodeOf(*after) == absl::StatusCode::kDeadlineExceeded)
      << CodeOf(*after) << ": " << after->status().message();
}

TEST(KvConnection, OpensANewStreamAfterTheReplicaRestarts) {
  ProcessCluster cluster(kServer, 1, kFastRaft);
  ASSERT_TRUE(SingleReplicaReady(cluster));
  KvPool pool(cluster.endpoints(), 1);
  KvConnection* conn = pool.connection(0, 0);
  ASSERT_TRUE(StreamOpen(conn));

  cluster.Restart(0);  // kill -9, start again
  ASSERT_TRUE(cluster.WaitHealthy(0).ok());
  // The first requests may still meet the broken stream or gRPC's reconnect
  // backoff (at most 1 s, see MakeKvChannel); then the connection must work.
  std::optional<KvResponse> resp;
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (true) {
    resp = SendAndWait(conn, MakeGet("k"), absl::Seconds(2));
    ASSERT_TRUE(resp.has_value()) << "a request hung";
    if (CodeOf(*resp) == absl::StatusCode::kOk || absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(CodeOf(*resp), absl::StatusCode::kOk) << resp->status().message();
}

TEST(KvConnection, SendsRacingAStreamThatBreaksAreSafeAndAllAnswered) {
  ProcessCluster cluster(kServer, 1, kFastRaft);
  ASSERT_TRUE(SingleReplicaReady(cluster));
  KvPool pool(cluster.endpoints(), 1);
  KvConnection* conn = pool.connection(0, 0);

  // Callers send from their own threads (as AsyncClerk's retries do from the
  // timer thread) while the replica dies under the stream, again and again:
  // a Send that meets a stream just as it ends must neither touch the
  // finished call nor lose its request.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> sent{0};
  auto answered = std::make_shared<std::atomic<int64_t>>(0);
  std::vector<std::thread> senders;
  for (int t = 0; t < 4; ++t) {
    senders.emplace_back([&] {
      while (!stop) {
        if (sent - *answered > 200) {  // bounded in flight
          absl::SleepFor(absl::Milliseconds(1));
          continue;
        }
        ++sent;
        conn->Send(MakeGet("k"), absl::Now() + absl::Seconds(2),
                   [answered](KvResponse) { ++*answered; });
      }
    });
  }
  for (int round = 0; round < 8; ++round) {
    absl::SleepFor(absl::Milliseconds(300));
    cluster.Kill(0);
    absl::SleepFor(absl::Milliseconds(100));
    cluster.Start(0);
  }
  stop = true;
  for (auto& t : senders) t.join();
  const absl::Time deadline = absl::Now() + absl::Seconds(2) + kCallbackSlack;
  while (*answered < sent && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(answered->load(), sent.load()) << "requests unanswered (or answered twice)";
}

TEST(KvPool, DestroyedWithRequestsInFlightRunsEveryCallbackOnceBeforeReturning) {
  ProcessCluster cluster(kServer, 1, kFastRaft);
  ASSERT_TRUE(SingleReplicaReady(cluster));
  auto pool = std::make_unique<KvPool>(cluster.endpoints(), 2);
  for (int c = 0; c < 2; ++c) {
    ASSERT_TRUE(StreamOpen(pool->connection(0, c)));
  }
  PauseAndSettle(cluster, 0);  // nothing will be answered

  constexpr int kRequests = 2000;
  struct Counts {
    std::vector<std::atomic<int>> calls = std::vector<std::atomic<int>>(kRequests);
    std::vector<std::atomic<int>> codes = std::vector<std::atomic<int>>(kRequests);
  };
  auto counts = std::make_shared<Counts>();  // outlives the test if callbacks come late
  for (int i = 0; i < kRequests; ++i) {
    auto done = [counts, i](KvResponse r) {
      // A little work per answer, as a real caller does (AsyncClerk retries
      // from here), so that callbacks still running after ~KvPool show.
      const absl::Time until = absl::Now() + absl::Microseconds(50);
      while (absl::Now() < until) {
      }
      counts->codes[i] = r.status().code();
      counts->calls[i]++;
    };
    pool->connection(0, i % 2)->Send(MakeGet("k"), absl::Now() + absl::Seconds(60), done);
  }
  absl::SleepFor(absl::Milliseconds(300));  // written to the (paused) replica
  pool.reset();

  int missing = 0;
  for (int i = 0; i < kRequests; ++i) missing += counts->calls[i].load() == 0;
  EXPECT_EQ(missing, 0) << missing << " of " << kRequests
                        << " callbacks had not run when ~KvPool returned";
  // Late callbacks (the failure above) still must run, once each.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  auto all_ran = [&] {
    for (int i = 0; i < kRequests; ++i) {
      if (counts->calls[i] == 0) return false;
    }
    return true;
  };
  while (!all_ran() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_EQ(counts->calls[i].load(), 1) << "request " << i;
    ASSERT_EQ(static_cast<absl::StatusCode>(counts->codes[i].load()),
              absl::StatusCode::kUnavailable)
        << "request " << i;
  }
  cluster.Resume(0);
}

}  // namespace
}  // namespace ds::client
