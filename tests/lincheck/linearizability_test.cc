#include "tests/lincheck/linearizability.h"

#include <algorithm>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ds::lincheck {
namespace {

using ::testing::HasSubstr;

Operation Get(int64_t client, std::string key, std::string output, int64_t call, int64_t ret,
              std::optional<bool> found = std::nullopt) {
  return Operation{client, OpKind::kGet, std::move(key), "", std::move(output), found, call, ret};
}
Operation Put(int64_t client, std::string key, std::string value, int64_t call, int64_t ret) {
  return Operation{client, OpKind::kPut, std::move(key), std::move(value),
                   "",     std::nullopt, call,           ret};
}
Operation Append(int64_t client, std::string key, std::string value, int64_t call, int64_t ret) {
  return Operation{client, OpKind::kAppend, std::move(key), std::move(value),
                   "",     std::nullopt,    call,           ret};
}
Operation Delete(int64_t client, std::string key, int64_t call, int64_t ret,
                 std::optional<bool> found = std::nullopt) {
  return Operation{client, OpKind::kDelete, std::move(key), "", "", found, call, ret};
}

LinearizabilityReport Check(const std::vector<Operation>& history,
                            absl::Duration timeout = absl::Seconds(10)) {
  absl::StatusOr<LinearizabilityReport> report = CheckKvHistory(history, timeout);
  EXPECT_TRUE(report.ok()) << report.status();
  return report.ok() ? *report : LinearizabilityReport{};
}

// --- Accepted histories ------------------------------------------------------

TEST(Linearizability, EmptyHistoryIsLinearizable) { EXPECT_EQ(Check({}).result, CheckResult::kOk); }

TEST(Linearizability, SequentialHistoryIsLinearizable) {
  LinearizabilityReport report = Check({
      Get(1, "k", "", 0, 1, false),
      Put(1, "k", "a", 2, 3),
      Append(1, "k", "b", 4, 5),
      Get(1, "k", "ab", 6, 7, true),
      Delete(1, "k", 8, 9, true),
      Get(1, "k", "", 10, 11, false),
      Delete(1, "k", 12, 13, false),
      Append(1, "k", "c", 14, 15),  // append to a missing key acts like put
      Get(1, "k", "c", 16, 17),
  });
  EXPECT_EQ(report.result, CheckResult::kOk) << report.explanation;
}

TEST(Linearizability, ConcurrentAppendsAreAcceptedInTheOnlyOrderThatFits) {
  // Both appends overlap; the read decides that "y" went first.
  std::vector<Operation> history = {
      Append(1, "k", "x", 0, 100),
      Append(2, "k", "y", 0, 100),
      Get(3, "k", "yx", 110, 120),
      Get(3, "k", "yx", 130, 140),
  };
  EXPECT_EQ(Check(history).result, CheckResult::kOk);
  history.push_back(Get(4, "k", "xy", 150, 160));
  EXPECT_EQ(Check(history).result, CheckResult::kIllegal);
}

TEST(Linearizability, ReadConcurrentWithAWriteMaySeeEitherValue) {
  for (const char* seen : {"a", "b"}) {
    LinearizabilityReport report = Check({
        Put(1, "k", "a", 0, 10),
        Put(2, "k", "b", 20, 40),
        Get(3, "k", seen, 25, 35),
    });
    EXPECT_EQ(report.result, CheckResult::kOk) << seen;
  }
}

TEST(Linearizability, OperationsTouchingAtOneInstantAreConcurrent) {
  // The Get is called at the very time the Put returns: it may come first.
  EXPECT_EQ(Check({Put(1, "k", "a", 0, 10), Get(2, "k", "", 10, 20)}).result, CheckResult::kOk);
  EXPECT_EQ(Check({Put(1, "k", "a", 0, 10), Get(2, "k", "", 11, 20)}).result,
            CheckResult::kIllegal);
}

TEST(Linearizability, KeysAreIndependent) {
  // Each key alone is linearizable; reads of different keys impose no order.
  LinearizabilityReport report = Check({
      Put(1, "a", "1", 0, 10),
      Put(2, "b", "1", 0, 10),
      Get(3, "a", "1", 20, 30),
      Get(3, "b", "1", 20, 30),
      Get(4, "c", "", 0, 5, false),
  });
  EXPECT_EQ(report.result, CheckResult::kOk) << report.explanation;
}

// --- Rejected histories ------------------------------------------------------

TEST(Linearizability, RejectsStaleReadAfterACompletedWrite) {
  LinearizabilityReport report = Check({
      Put(1, "k", "a", 0, 10),
      Put(1, "k", "b", 20, 30),
      Get(2, "k", "a", 40, 50),
  });
  ASSERT_EQ(report.result, CheckResult::kIllegal);
  // The report names the key and the read whose return broke linearizability.
  EXPECT_THAT(report.explanation, HasSubstr("key \"k\""));
  EXPECT_THAT(report.explanation, HasSubstr("stops being linearizable when this returns:\n"
                                            "  client 2: Get(\"k\") -> \"a\" [40, 50]"));
  EXPECT_THAT(report.explanation, HasSubstr("value after it: \"b\""));
}

TEST(Linearizability, RejectsALostAppend) {
  EXPECT_EQ(Check({
                      Append(1, "k", "x", 0, 10),
                      Append(2, "k", "y", 20, 30),
                      Get(3, "k", "x", 40, 50),
                  })
                .result,
            CheckResult::kIllegal);
}

TEST(Linearizability, RejectsADuplicatedAppend) {
  EXPECT_EQ(Check({
                      Append(1, "k", "x", 0, 10),
                      Append(2, "k", "y", 0, 10),
                      Get(3, "k", "xyx", 20, 30),
                  })
                .result,
            CheckResult::kIllegal);
}

TEST(Linearizability, RejectsAReadOfAValueNeverWritten) {
  LinearizabilityReport report = Check({
      Put(1, "k", "a", 0, 10),
      Get(2, "k", "z", 5, 15),
  });
  ASSERT_EQ(report.result, CheckResult::kIllegal);
  EXPECT_THAT(report.explanation, HasSubstr("client 2: Get(\"k\") -> \"z\" [5, 15]"));
}

TEST(Linearizability, RejectsTwoReadersSeeingWritesInOppositeOrders) {
  LinearizabilityReport report = Check({
      Put(1, "k", "a", 0, 1000),
      Put(2, "k", "b", 0, 1000),
      Get(3, "k", "a", 100, 110),
      Get(3, "k", "b", 200, 210),
      Get(4, "k", "b", 100, 110),
      Get(4, "k", "a", 200, 210),
  });
  EXPECT_EQ(report.result, CheckResult::kIllegal);
}

TEST(Linearizability, RejectsAMissingKeyAfterACompletedPut) {
  EXPECT_EQ(Check({Put(1, "k", "", 0, 10), Get(2, "k", "", 20, 30, false)}).result,
            CheckResult::kIllegal);
  // Without the found flag an empty value and a missing key read the same.
  EXPECT_EQ(Check({Put(1, "k", "", 0, 10), Get(2, "k", "", 20, 30)}).result, CheckResult::kOk);
}

TEST(Linearizability, RejectsADeleteThatFoundNothingAfterACompletedPut) {
  EXPECT_EQ(Check({Put(1, "k", "a", 0, 10), Delete(2, "k", 20, 30, false)}).result,
            CheckResult::kIllegal);
}

TEST(Linearizability, OneIllegalKeyMakesTheHistoryIllegal) {
  LinearizabilityReport report = Check({
      Put(1, "good", "1", 0, 10),
      Get(2, "good", "1", 20, 30),
      Put(1, "bad", "1", 0, 10),
      Get(2, "bad", "2", 20, 30),
  });
  ASSERT_EQ(report.result, CheckResult::kIllegal);
  EXPECT_THAT(report.explanation, HasSubstr("key \"bad\""));
}

// --- Unknown outcomes ----------------------------------------------------------

TEST(Linearizability, UnknownWriteMayHaveHappened) {
  EXPECT_EQ(Check({
                      Put(1, "k", "a", 0, 10),
                      Put(2, "k", "b", 20, kNeverReturned),
                      Get(3, "k", "b", 30, 40),
                  })
                .result,
            CheckResult::kOk);
}

TEST(Linearizability, UnknownWriteMayNotHaveHappened) {
  EXPECT_EQ(Check({
                      Put(1, "k", "a", 0, 10),
                      Put(2, "k", "b", 20, kNeverReturned),
                      Get(3, "k", "a", 30, 40),
                      Get(3, "k", "a", 1000, 1010),
                  })
                .result,
            CheckResult::kOk);
}

TEST(Linearizability, UnknownWriteCannotTakeEffectBeforeItsCall) {
  EXPECT_EQ(Check({
                      Put(1, "k", "a", 0, 10),
                      Get(3, "k", "b", 20, 30),
                      Put(2, "k", "b", 40, kNeverReturned),
                  })
                .result,
            CheckResult::kIllegal);
}

TEST(Linearizability, UnknownAppendTakesEffectAtMostOnce) {
  // Once a reader saw it, it cannot disappear, nor be applied a second time.
  std::vector<Operation> seen_then_gone = {
      Append(1, "k", "x", 0, kNeverReturned),
      Get(2, "k", "x", 10, 20),
      Get(2, "k", "", 30, 40),
  };
  EXPECT_EQ(Check(seen_then_gone).result, CheckResult::kIllegal);
  std::vector<Operation> applied_twice = {
      Append(1, "k", "x", 0, kNeverReturned),
      Get(2, "k", "x", 10, 20),
      Get(2, "k", "xx", 30, 40),
  };
  EXPECT_EQ(Check(applied_twice).result, CheckResult::kIllegal);
}

TEST(Linearizability, UnknownOutcomeReadsAreIgnored) {
  EXPECT_EQ(Check({
                      Put(1, "k", "a", 0, 10),
                      Get(2, "k", "garbage", 20, kNeverReturned),
                  })
                .result,
            CheckResult::kOk);
}

TEST(Linearizability, OperationReturningBeforeItsCallIsInvalidInput) {
  EXPECT_EQ(CheckKvHistory({Put(1, "k", "a", 10, 5)}, absl::Seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// --- Big randomized histories --------------------------------------------------

// Our own generator (same sequence with every compiler).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  int64_t Uniform(int64_t n) { return static_cast<int64_t>(Next() % n); }

 private:
  uint64_t state_;
};

struct RandomHistoryOptions {
  int clients = 8;
  int ops_per_client = 1000;
  int keys = 4;
  bool append_and_get_only = false;
  int unknown_percent = 2;            // writes whose client never learns the outcome
  int unknown_happened_percent = 50;  // of those, the ones that took effect
};

// A history that is linearizable by construction: every operation takes effect
// at a random instant between its call and its return, on a simulated map.
// Operations with unknown outcome either take effect in their window or never.
std::vector<Operation> RandomLinearizableHistory(uint64_t seed,
                                                 const RandomHistoryOptions& options) {
  Rng rng(seed);
  std::vector<Operation> ops;
  std::vector<int64_t> effect_time;  // -1: never took effect
  for (int c = 0; c < options.clients; ++c) {
    int64_t t = rng.Uniform(10);
    for (int j = 0; j < options.ops_per_client; ++j) {
      Operation op;
      op.client_id = c;
      op.key = "k" + std::to_string(rng.Uniform(options.keys));
      const int64_t dice = rng.Uniform(100);
      if (options.append_and_get_only) {
        op.kind = dice < 50 ? OpKind::kGet : OpKind::kAppend;
      } else {
        op.kind = dice < 40   ? OpKind::kGet
                  : dice < 55 ? OpKind::kPut
                  : dice < 90 ? OpKind::kAppend
                              : OpKind::kDelete;
      }
      op.value = absl::StrCat(c, ".", j, ";");
      op.call_time = t;
      const int64_t duration = 1 + rng.Uniform(50);
      op.return_time = t + duration;
      int64_t effect = t + rng.Uniform(duration + 1);
      if (op.kind != OpKind::kGet && rng.Uniform(100) < options.unknown_percent) {
        op.return_time = kNeverReturned;
        if (rng.Uniform(100) >= options.unknown_happened_percent) effect = -1;
      }
      t += duration + rng.Uniform(5);
      ops.push_back(std::move(op));
      effect_time.push_back(effect);
    }
  }
  std::vector<size_t> order;
  for (size_t i = 0; i < ops.size(); ++i) {
    if (effect_time[i] >= 0) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return effect_time[a] < effect_time[b]; });
  std::map<std::string, std::string> kv;
  for (size_t i : order) {
    Operation& op = ops[i];
    auto it = kv.find(op.key);
    switch (op.kind) {
      case OpKind::kGet:
        op.found = it != kv.end();
        op.output = it != kv.end() ? it->second : "";
        break;
      case OpKind::kPut:
        kv[op.key] = op.value;
        break;
      case OpKind::kAppend:
        kv[op.key] += op.value;
        break;
      case OpKind::kDelete:
        op.found = it != kv.end();
        kv.erase(op.key);
        break;
    }
  }
  return ops;
}

TEST(LinearizabilityRandom, BigConcurrentLinearizableHistoryIsAccepted) {
  for (uint64_t seed : {1, 2, 3}) {
    std::vector<Operation> history = RandomLinearizableHistory(seed, {});
    LinearizabilityReport report = Check(history, absl::Seconds(20));
    EXPECT_EQ(report.result, CheckResult::kOk) << "seed " << seed << "\n" << report.explanation;
  }
}

TEST(LinearizabilityRandom, HighlyConcurrentSingleKeyHistoryIsAccepted) {
  std::vector<Operation> history =
      RandomLinearizableHistory(7, {.clients = 8, .ops_per_client = 100, .keys = 1});
  LinearizabilityReport report = Check(history, absl::Seconds(20));
  EXPECT_EQ(report.result, CheckResult::kOk) << report.explanation;
}

// Makes one read of an append-only history miss an append that completed before
// the read was called: a stale read no interleaving can explain, because every
// appended token is unique and values only grow.
bool InjectStaleRead(std::vector<Operation>& history, size_t* victim) {
  for (size_t g = history.size() / 2; g < history.size(); ++g) {
    Operation& get = history[g];
    if (get.kind != OpKind::kGet || get.output.empty()) continue;
    for (const Operation& w : history) {
      if (w.kind != OpKind::kAppend || w.key != get.key || !w.outcome_known() ||
          w.return_time >= get.call_time) {
        continue;
      }
      const size_t at = get.output.find(w.value);
      if (at == std::string::npos) continue;
      get.output.erase(at, w.value.size());
      get.found = true;
      *victim = g;
      return true;
    }
  }
  return false;
}

TEST(LinearizabilityRandom, BigHistoryWithOneStaleReadIsRejected) {
  for (uint64_t seed : {11, 12}) {
    std::vector<Operation> history =
        RandomLinearizableHistory(seed, {.ops_per_client = 500, .append_and_get_only = true});
    ASSERT_EQ(Check(history, absl::Seconds(20)).result, CheckResult::kOk);
    size_t victim = 0;
    ASSERT_TRUE(InjectStaleRead(history, &victim));
    LinearizabilityReport report = Check(history, absl::Seconds(20));
    ASSERT_EQ(report.result, CheckResult::kIllegal) << "seed " << seed;
    // The culprit found by bisection is the tampered read.
    EXPECT_THAT(report.explanation,
                HasSubstr("when this returns:\n  " + DescribeOperation(history[victim])))
        << report.explanation;
  }
}

TEST(LinearizabilityRandom, ZeroBudgetGivesUnknownNotAVerdict) {
  std::vector<Operation> history = RandomLinearizableHistory(5, {});
  LinearizabilityReport report = Check(history, absl::ZeroDuration());
  EXPECT_EQ(report.result, CheckResult::kUnknown);
  EXPECT_THAT(report.explanation, HasSubstr("\"k0\""));
}

// The specification the search must match, by brute force: some order of the
// operations (each unknown-outcome one either included anywhere after its call,
// or left out) that respects real time and the sequential semantics.
bool BruteForceLinearizable(const std::vector<Operation>& ops) {
  const int n = static_cast<int>(ops.size());
  std::vector<int> order;
  std::vector<bool> used(n, false);
  std::function<bool(std::optional<std::string>)> extend =
      [&](std::optional<std::string> state) -> bool {
    bool all_known_placed = true;
    for (int i = 0; i < n; ++i) all_known_placed &= used[i] || !ops[i].outcome_known();
    if (all_known_placed) return true;  // unknown ones left: they never happened
    for (int i = 0; i < n; ++i) {
      if (used[i]) continue;
      bool minimal = true;  // nothing unplaced returned before i was called
      for (int j = 0; j < n; ++j) {
        if (!used[j] && j != i && ops[j].return_time < ops[i].call_time) minimal = false;
      }
      if (!minimal) continue;
      const Operation& op = ops[i];
      const bool known = op.outcome_known();
      std::optional<std::string> next = state;
      switch (op.kind) {
        case OpKind::kGet:
          if (known && (state.value_or("") != op.output ||
                        (op.found.has_value() && *op.found != state.has_value()))) {
            continue;
          }
          break;
        case OpKind::kPut:
          next = op.value;
          break;
        case OpKind::kAppend:
          next = state.value_or("") + op.value;
          break;
        case OpKind::kDelete:
          if (known && op.found.has_value() && *op.found != state.has_value()) continue;
          next.reset();
          break;
      }
      used[i] = true;
      const bool ok = extend(next);
      used[i] = false;
      if (ok) return true;
    }
    return false;
  };
  return extend(std::nullopt);
}

TEST(LinearizabilityRandom, AgreesWithBruteForceOnSmallRandomHistories) {
  Rng rng(99);
  int illegal = 0;
  for (int round = 0; round < 1500; ++round) {
    std::vector<Operation> ops;
    const int n = 2 + static_cast<int>(rng.Uniform(6));
    for (int i = 0; i < n; ++i) {
      Operation op;
      op.client_id = i;
      op.key = "k";
      op.kind = static_cast<OpKind>(rng.Uniform(4));
      const char* values[] = {"", "a", "b", "ab", "ba", "aa"};
      op.value = values[1 + rng.Uniform(2)];
      op.output = values[rng.Uniform(6)];
      if (rng.Uniform(3) != 0) op.found = rng.Uniform(4) != 0;
      op.call_time = rng.Uniform(10);
      op.return_time = op.call_time + rng.Uniform(6);
      if (rng.Uniform(8) == 0) op.return_time = kNeverReturned;
      ops.push_back(op);
    }
    const bool expected = BruteForceLinearizable(ops);
    illegal += expected ? 0 : 1;
    LinearizabilityReport report = Check(ops);
    ASSERT_EQ(report.result, expected ? CheckResult::kOk : CheckResult::kIllegal)
        << "round " << round << ":\n"
        << [&] {
             std::string text;
             for (const Operation& op : ops) text += DescribeOperation(op) + "\n";
             return text;
           }();
  }
  // Both verdicts were exercised.
  EXPECT_GT(illegal, 100);
  EXPECT_LT(illegal, 1400);
}

// --- HistoryRecorder -----------------------------------------------------------

TEST(HistoryRecorder, RecordsConcurrentClientsIntoACheckableHistory) {
  HistoryRecorder recorder;
  absl::Mutex mu;
  std::string value;  // a linearizable "server": one lock around each operation
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (int j = 0; j < 50; ++j) {
        const std::string token = absl::StrCat(c, ".", j, ";");
        HistoryRecorder::Handle h = recorder.Begin(c, OpKind::kAppend, "k", token);
        {
          absl::MutexLock lock(&mu);
          value += token;
        }
        recorder.End(h);
        h = recorder.Begin(c, OpKind::kGet, "k");
        std::string seen;
        {
          absl::MutexLock lock(&mu);
          seen = value;
        }
        recorder.End(h, seen, true);
      }
      // A timed-out write: never ended, so its outcome is unknown.
      recorder.Begin(c, OpKind::kPut, "k", "lost");
      recorder.Discard(recorder.Begin(c, OpKind::kPut, "k", "refused"));
    });
  }
  for (std::thread& t : clients) t.join();
  std::vector<Operation> history = recorder.Snapshot();
  EXPECT_EQ(history.size(), 4u * (2 * 50 + 1));
  LinearizabilityReport report = Check(history);
  EXPECT_EQ(report.result, CheckResult::kOk) << report.explanation;
}

}  // namespace
}  // namespace ds::lincheck
