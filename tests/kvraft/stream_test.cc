// Multi-process tests of the Batch-stream client (client/kv_stream.h) and of
// KvService.Batch, against real kvraft-server processes: AsyncClerk semantics,
// many sessions over few connections, a killed and a paused leader (histories
// checked for linearizability, appends for exactly-once), KvConnection's and
// KvPool's failure paths, and the server's per-request validation.
#include "client/kv_stream.h"

#include <atomic>
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
#include "gtest/gtest.h"
#include "tests/kvraft/process_cluster.h"
#include "tests/lincheck/linearizability.h"

namespace ds::kv {
namespace {

using client::AsyncClerk;
using client::ClerkOptions;
using client::GetResult;
using client::KvConnection;
using client::KvPool;
using lincheck::HistoryRecorder;
using lincheck::OpKind;
using testing::ProcessCluster;

// Raft timing for tests: elections within about a second (as process_test.cc).
// The request limit is small so that a value over it is cheap to send.
const std::vector<std::string> kFastRaft = {"--tick-interval=50ms", "--election-ticks=10",
                                            "--log-level=warn", "--max-request-bytes=4096"};

// How long after its deadline a callback may still come before the test calls
// it a hang: the pool's timer period plus scheduling delays under ASan on a
// loaded 2-core machine.
constexpr absl::Duration kCallbackSlack = absl::Seconds(2);

absl::StatusCode CodeOf(const pb::KvResponse& r) { return static_cast<absl::StatusCode>(r.code()); }

// The replica that says it is the leader, waiting up to `limit` for one; -1 if none.
int WaitForLeader(ProcessCluster& cluster, absl::Duration limit = absl::Seconds(20)) {
  const absl::Time deadline = absl::Now() + limit;
  while (absl::Now() < deadline) {
    if (int leader = cluster.Leader(); leader >= 0) return leader;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return -1;
}

// One healthy 3-replica cluster for the tests that neither kill, pause nor
// restart a replica (each uses keys of its own); started at first use, killed
// and removed at exit.
ProcessCluster& HealthyCluster() {
  static const std::unique_ptr<ProcessCluster> cluster = [] {
    auto c = std::make_unique<ProcessCluster>(3, kFastRaft);
    for (int i = 0; i < c->size(); ++i) {
      absl::Status st = c->WaitHealthy(i);
      if (!st.ok()) ADD_FAILURE() << "replica " << i + 1 << ": " << st;
    }
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
std::shared_ptr<CallResult<pb::KvResponse>> SendLater(KvConnection* conn, pb::KvRequest request,
                                                      absl::Duration timeout) {
  auto r = std::make_shared<CallResult<pb::KvResponse>>();
  conn->Send(std::move(request), absl::Now() + timeout, RecordInto(r));
  return r;
}

// Sends `request` on `conn` with a deadline `timeout` from now and waits for
// its answer (nullopt: none by the deadline plus slack).
std::optional<pb::KvResponse> SendAndWait(KvConnection* conn, pb::KvRequest request,
                                          absl::Duration timeout) {
  return Await<pb::KvResponse>(
      [&](KvConnection::Callback cb) {
        conn->Send(std::move(request), absl::Now() + timeout, std::move(cb));
      },
      timeout + kCallbackSlack);
}

pb::KvRequest MakeGet(std::string key) {
  pb::KvRequest r;
  r.mutable_get()->set_key(std::move(key));
  return r;
}

pb::KvRequest MakePut(std::string key, std::string value, uint64_t client_id, uint64_t sequence) {
  pb::KvRequest r;
  pb::PutRequest* put = r.mutable_put();
  put->set_key(std::move(key));
  put->set_value(std::move(value));
  put->set_client_id(client_id);
  put->set_sequence(sequence);
  return r;
}

// Sends `request` to whichever replica is the leader, again while the answer
// is UNAVAILABLE or DEADLINE_EXCEEDED (leadership moving), for up to 20 s.
std::optional<pb::KvResponse> SendToLeader(ProcessCluster& cluster, KvPool& pool,
                                           const pb::KvRequest& request) {
  std::optional<pb::KvResponse> resp;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    const int leader = WaitForLeader(cluster);
    if (leader < 0) break;
    resp = SendAndWait(pool.connection(leader, 0), request, absl::Seconds(3));
    if (!resp) return resp;
    if (CodeOf(*resp) != absl::StatusCode::kUnavailable &&
        CodeOf(*resp) != absl::StatusCode::kDeadlineExceeded) {
      return resp;
    }
  }
  return resp;
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
  uint64_t client_id() const { return clerk_.client_id(); }

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
  uint64_t client_id(int c) const { return clients_[c]->clerk.client_id(); }
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

void ExpectLinearizable(AsyncWorkload& w) { testing::ExpectLinearizable(w.history().Snapshot()); }

void ExpectAppendsExactlyOnce(AsyncWorkload& w, ProcessCluster& cluster) {
  testing::ExpectAppendsExactlyOnce(w.appends(), cluster);
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
  ASSERT_GE(WaitForLeader(cluster), 0);
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
  ASSERT_GE(WaitForLeader(cluster), 0);
  BlockingClerk clerk(Options(cluster, absl::Seconds(10)),
                      std::make_shared<KvPool>(cluster.endpoints(), 1));
  auto r = clerk.Get("missing-never-written");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->found);
  EXPECT_EQ(r->value, "");
}

TEST(AsyncClerk, RegistersASessionAtItsFirstWriteAndNotForReads) {
  ProcessCluster& cluster = HealthyCluster();
  ASSERT_GE(WaitForLeader(cluster), 0);
  BlockingClerk clerk(Options(cluster, absl::Seconds(10)),
                      std::make_shared<KvPool>(cluster.endpoints(), 1));
  ASSERT_TRUE(clerk.Get("session-key").ok());
  EXPECT_EQ(clerk.client_id(), 0u) << "a Get opened a session";
  ASSERT_TRUE(clerk.Put("session-key", "x").ok());
  const uint64_t id = clerk.client_id();
  EXPECT_NE(id, 0u);
  ASSERT_TRUE(clerk.Append("session-key", "y").ok());
  EXPECT_EQ(clerk.client_id(), id) << "a second write opened another session";
}

TEST(AsyncClerk, FortySessionsOverTwoConnectionsPerReplicaAreLinearizableAndExactlyOnce) {
  ProcessCluster& cluster = HealthyCluster();
  ASSERT_GE(WaitForLeader(cluster), 0);
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
    if (w.client_id(c) != 0) sessions.insert(w.client_id(c));
    absl::StrAppend(&ids, " ", w.client_id(c));
  }
  EXPECT_EQ(sessions.size(), 40u) << "clerks must not share or lack sessions; ids:" << ids;
  ExpectLinearizable(w);
  ExpectAppendsExactlyOnce(w, cluster);
}

// ---- AsyncClerk while the leader fails ----

TEST(AsyncClerkFailover, LeaderKilledWhileWritingLosesAndDuplicatesNothing) {
  ProcessCluster cluster(3, kFastRaft);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cluster.WaitHealthy(i).ok());
  ASSERT_GE(WaitForLeader(cluster), 0);
  auto pool = std::make_shared<KvPool>(cluster.endpoints(), 2);
  AsyncWorkload w(pool, {.clients = 10, .keys = 4, .clerk = Options(cluster, absl::Seconds(5))});
  for (int round = 0; round < 2; ++round) {
    absl::SleepFor(absl::Seconds(1));
    const int leader = WaitForLeader(cluster);
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
  ProcessCluster cluster(3, kFastRaft);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cluster.WaitHealthy(i).ok());
  const int leader = WaitForLeader(cluster);
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

// ---- KvConnection and KvPool against one replica ----

// A one-replica cluster that is up and leads itself.
::testing::AssertionResult SingleReplicaReady(ProcessCluster& cluster) {
  if (absl::Status st = cluster.WaitHealthy(0); !st.ok()) {
    return ::testing::AssertionFailure() << "replica not healthy: " << st;
  }
  if (int leader = WaitForLeader(cluster); leader != 0) {
    return ::testing::AssertionFailure() << "no leader (got " << leader << ")";
  }
  return ::testing::AssertionSuccess();
}

// Opens `conn`'s stream with one Get and checks that it is answered OK.
::testing::AssertionResult StreamOpen(KvConnection* conn) {
  auto warm = SendAndWait(conn, MakeGet("k"), absl::Seconds(10));
  if (!warm.has_value()) return ::testing::AssertionFailure() << "no answer";
  if (CodeOf(*warm) != absl::StatusCode::kOk) {
    return ::testing::AssertionFailure() << "answered " << CodeOf(*warm) << ": " << warm->message();
  }
  return ::testing::AssertionSuccess();
}

TEST(KvConnection, RequestToAPausedReplicaExpiresAtItsDeadline) {
  ProcessCluster cluster(1, kFastRaft);
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
  EXPECT_EQ(CodeOf(*resp), absl::StatusCode::kDeadlineExceeded) << resp->message();
  EXPECT_GE(took, absl::Milliseconds(950)) << "expired before its deadline";
  auto far_resp = AwaitResult(*far, absl::Seconds(20));
  ASSERT_TRUE(far_resp.has_value()) << "the far request was not answered after the replica resumed";
  EXPECT_EQ(CodeOf(*far_resp), absl::StatusCode::kOk) << far_resp->message();
}

TEST(KvConnection, RequestInFlightFailsUnavailableWhenTheReplicaIsKilled) {
  ProcessCluster cluster(1, kFastRaft);
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
  EXPECT_EQ(CodeOf(*killed), absl::StatusCode::kUnavailable) << killed->message();

  // A request sent after the kill fails too (no replica to connect to) rather
  // than waiting forever for the stream.
  auto after = SendAndWait(conn, MakeGet("k"), absl::Seconds(5));
  ASSERT_TRUE(after.has_value()) << "a request to a dead replica hung";
  EXPECT_TRUE(CodeOf(*after) == absl::StatusCode::kUnavailable ||
              CodeOf(*after) == absl::StatusCode::kDeadlineExceeded)
      << CodeOf(*after) << ": " << after->message();
}

TEST(KvConnection, OpensANewStreamAfterTheReplicaRestarts) {
  ProcessCluster cluster(1, kFastRaft);
  ASSERT_TRUE(SingleReplicaReady(cluster));
  KvPool pool(cluster.endpoints(), 1);
  KvConnection* conn = pool.connection(0, 0);
  ASSERT_TRUE(StreamOpen(conn));

  cluster.Restart(0);  // kill -9, start again
  ASSERT_TRUE(cluster.WaitHealthy(0).ok());
  // The first requests may still meet the broken stream or gRPC's reconnect
  // backoff (at most 1 s, see MakeKvChannel); then the connection must work.
  std::optional<pb::KvResponse> resp;
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (true) {
    resp = SendAndWait(conn, MakeGet("k"), absl::Seconds(2));
    ASSERT_TRUE(resp.has_value()) << "a request hung";
    if (CodeOf(*resp) == absl::StatusCode::kOk || absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(CodeOf(*resp), absl::StatusCode::kOk) << resp->message();
}

TEST(KvConnection, SendsRacingAStreamThatBreaksAreSafeAndAllAnswered) {
  ProcessCluster cluster(1, kFastRaft);
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
                   [answered](pb::KvResponse) { ++*answered; });
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
  ProcessCluster cluster(1, kFastRaft);
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
    auto done = [counts, i](pb::KvResponse r) {
      // A little work per answer, as a real caller does (AsyncClerk retries
      // from here), so that callbacks still running after ~KvPool show.
      const absl::Time until = absl::Now() + absl::Microseconds(50);
      while (absl::Now() < until) {
      }
      counts->codes[i] = r.code();
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

// ---- KvService.Batch: per-request validation and answers ----

TEST(Batch, EmptyKeyIsInvalidArgument) {
  ProcessCluster& cluster = HealthyCluster();
  KvPool pool(cluster.endpoints(), 1);
  auto put = SendAndWait(pool.connection(0, 0), MakePut("", "v", 1, 1), absl::Seconds(5));
  ASSERT_TRUE(put.has_value());
  EXPECT_EQ(CodeOf(*put), absl::StatusCode::kInvalidArgument) << put->message();
  auto get = SendAndWait(pool.connection(0, 0), MakeGet(""), absl::Seconds(5));
  ASSERT_TRUE(get.has_value());
  EXPECT_EQ(CodeOf(*get), absl::StatusCode::kInvalidArgument) << get->message();
}

TEST(Batch, KeyAndValueOverTheRequestLimitAreInvalidArgument) {
  ProcessCluster& cluster = HealthyCluster();  // --max-request-bytes=4096
  KvPool pool(cluster.endpoints(), 1);
  auto resp = SendAndWait(pool.connection(0, 0), MakePut("big", std::string(5000, 'x'), 1, 1),
                          absl::Seconds(5));
  ASSERT_TRUE(resp.has_value());
  EXPECT_EQ(CodeOf(*resp), absl::StatusCode::kInvalidArgument) << resp->message();
}

TEST(Batch, RejectedRequestCarriesNoResult) {
  ProcessCluster& cluster = HealthyCluster();
  KvPool pool(cluster.endpoints(), 1);
  // As for a request that fails later (Handle's `complete` clears the result):
  // only a successful response has one.
  auto resp = SendAndWait(pool.connection(0, 0), MakePut("", "v", 1, 1), absl::Seconds(5));
  ASSERT_TRUE(resp.has_value());
  ASSERT_EQ(CodeOf(*resp), absl::StatusCode::kInvalidArgument) << resp->message();
  EXPECT_EQ(resp->result_case(), pb::KvResponse::RESULT_NOT_SET);
}

TEST(Batch, WriteWithoutClientIdOrSequenceIsInvalidArgument) {
  ProcessCluster& cluster = HealthyCluster();
  KvPool pool(cluster.endpoints(), 1);
  auto no_client = SendAndWait(pool.connection(0, 0), MakePut("k", "v", 0, 1), absl::Seconds(5));
  ASSERT_TRUE(no_client.has_value());
  EXPECT_EQ(CodeOf(*no_client), absl::StatusCode::kInvalidArgument) << no_client->message();
  auto no_sequence = SendAndWait(pool.connection(0, 0), MakePut("k", "v", 7, 0), absl::Seconds(5));
  ASSERT_TRUE(no_sequence.has_value());
  EXPECT_EQ(CodeOf(*no_sequence), absl::StatusCode::kInvalidArgument) << no_sequence->message();
}

TEST(Batch, RequestWithoutAnOperationIsInvalidArgument) {
  ProcessCluster& cluster = HealthyCluster();
  KvPool pool(cluster.endpoints(), 1);
  auto resp = SendAndWait(pool.connection(0, 0), pb::KvRequest(), absl::Seconds(5));
  ASSERT_TRUE(resp.has_value());
  EXPECT_EQ(CodeOf(*resp), absl::StatusCode::kInvalidArgument) << resp->message();
}

TEST(Batch, WriteFromAnUnregisteredClientIsFailedPrecondition) {
  ProcessCluster& cluster = HealthyCluster();
  KvPool pool(cluster.endpoints(), 1);
  // Session ids are log indexes; this one is far beyond any log of this test.
  auto resp = SendToLeader(cluster, pool, MakePut("unregistered", "v", uint64_t{1} << 60, 1));
  ASSERT_TRUE(resp.has_value());
  EXPECT_EQ(CodeOf(*resp), absl::StatusCode::kFailedPrecondition) << resp->message();
  auto get = SendToLeader(cluster, pool, MakeGet("unregistered"));
  ASSERT_TRUE(get.has_value());
  ASSERT_EQ(CodeOf(*get), absl::StatusCode::kOk) << get->message();
  EXPECT_FALSE(get->get().found()) << "the refused write was applied";
}

TEST(Batch, FollowerAnswersUnavailableWithTheLeadersAddress) {
  ProcessCluster& cluster = HealthyCluster();
  const int leader = WaitForLeader(cluster);
  ASSERT_GE(leader, 0);
  const int follower = (leader + 1) % cluster.size();
  KvPool pool(cluster.endpoints(), 1);
  auto resp = SendAndWait(pool.connection(follower, 0), MakeGet("k"), absl::Seconds(5));
  ASSERT_TRUE(resp.has_value());
  EXPECT_EQ(CodeOf(*resp), absl::StatusCode::kUnavailable) << resp->message();
  EXPECT_EQ(resp->leader_id(), static_cast<uint64_t>(leader + 1));
  EXPECT_EQ(resp->leader_address(), cluster.endpoints()[leader]);
}

TEST(Batch, ManyRequestsInFlightOnOneStreamEachGetTheirOwnAnswer) {
  ProcessCluster& cluster = HealthyCluster();
  ASSERT_GE(WaitForLeader(cluster), 0);
  auto pool = std::make_shared<KvPool>(cluster.endpoints(), 1);
  constexpr int kKeys = 20;
  BlockingClerk writer(Options(cluster, absl::Seconds(10)), pool);
  for (int k = 0; k < kKeys; ++k) {
    ASSERT_TRUE(writer.Put(absl::StrCat("own-", k), absl::StrCat("value-", k)).ok());
  }
  const int leader = WaitForLeader(cluster);
  ASSERT_GE(leader, 0);
  KvConnection* conn = pool->connection(leader, 0);

  // All sent at once: they share stream messages and answers come back in
  // completion order, so each must still reach its own callback.
  constexpr int kRequests = 400;
  struct State {
    absl::Mutex mu;
    int answered ABSL_GUARDED_BY(mu) = 0;
    int wrong ABSL_GUARDED_BY(mu) = 0;
    int failed ABSL_GUARDED_BY(mu) = 0;
    std::set<uint64_t> ids ABSL_GUARDED_BY(mu);
    std::string example ABSL_GUARDED_BY(mu);
  };
  auto state = std::make_shared<State>();
  for (int i = 0; i < kRequests; ++i) {
    const int k = i % kKeys;
    conn->Send(MakeGet(absl::StrCat("own-", k)), absl::Now() + absl::Seconds(20),
               [state, k](pb::KvResponse r) {
                 absl::MutexLock lock(&state->mu);
                 ++state->answered;
                 state->ids.insert(r.id());
                 if (CodeOf(r) != absl::StatusCode::kOk) {
                   ++state->failed;
                   state->example = r.message();
                 } else if (r.get().value() != absl::StrCat("value-", k)) {
                   ++state->wrong;
                   state->example = absl::StrCat("own-", k, " read ", r.get().value());
                 }
               });
  }
  absl::MutexLock lock(&state->mu);
  state->mu.AwaitWithTimeout(absl::Condition(
                                 +[](State* s) { return s->answered == kRequests; }, state.get()),
                             absl::Seconds(20) + kCallbackSlack);
  EXPECT_EQ(state->answered, kRequests);
  EXPECT_EQ(state->ids.size(), static_cast<size_t>(kRequests)) << "ids are not unique";
  EXPECT_EQ(state->failed, 0) << state->example;
  EXPECT_EQ(state->wrong, 0) << "an answer reached the wrong request: " << state->example;
}

}  // namespace
}  // namespace ds::kv
