// The KV layer over the generic replica-process cluster
// (tests/common/process_cluster.h) for kvraft's multi-process tests: the
// binary name, a Clerk for a cluster, and the shared checks of what the
// clients did (tests/common/kv_checks.h) with a reader for final values, and
// a load of recording clients to check them on (KvWorkload).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/clerk.h"
#include "gtest/gtest.h"
#include "tests/common/kv_checks.h"
#include "tests/common/process_cluster.h"
#include "tests/lincheck/linearizability.h"

namespace ds::kv::testing {

using ::ds::testing::ProcessCluster;

// The daemon under test: ProcessCluster cluster(kKvServer, 3, flags).
inline constexpr char kKvServer[] = "kvraft-server";

// A blocking Clerk for `cluster`, whose operations give up after `op_timeout`.
inline std::unique_ptr<client::Clerk> NewKvClerk(const ProcessCluster& cluster,
                                                 absl::Duration op_timeout = absl::Seconds(5)) {
  auto c = client::Clerk::Create({.endpoints = cluster.endpoints(),
                                  .operation_timeout = op_timeout,
                                  .attempt_timeout = absl::Milliseconds(500)});
  if (!c.ok()) {
    ADD_FAILURE() << "Clerk::Create: " << c.status();
    std::abort();
  }
  return std::move(*c);
}

// The checks of every multi-process KV test (tests/common/kv_checks.h), for
// kvraft's tests as testing::ExpectLinearizable(history) and
// testing::ExpectAppendsExactlyOnce(appends, KvReader(cluster)).
using ::ds::testing::ExpectAppendsExactlyOnce;
using ::ds::testing::ExpectLinearizable;

// Reads final values for ExpectAppendsExactlyOnce through a Clerk (the unary
// path: a linearizable read at the leader); "" for a missing key.
inline ::ds::testing::KeyReader KvReader(const ProcessCluster& cluster,
                                         absl::Duration op_timeout = absl::Seconds(20)) {
  std::shared_ptr<client::Clerk> clerk = NewKvClerk(cluster, op_timeout);
  return [clerk](const std::string& key) -> absl::StatusOr<std::string> {
    absl::StatusOr<client::GetResult> r = clerk->Get(key);
    if (!r.ok()) return r.status();
    return r->value;
  };
}

// Clients doing random Put/Append/Get on a few keys through Clerks over
// every endpoint the cluster has when the load starts (replicas added with
// ProcessCluster::Add() before it included), recording the history. Appends
// go to keys a<i>, Puts to k<i>, so that an acknowledged append can never be
// erased by a Put; each append carries a unique token "c<client>.<n>;" so
// that duplicates and losses show (ExpectAppendsExactlyOnce).
class KvWorkload {
 public:
  KvWorkload(const ProcessCluster& cluster, int clients, int keys,
             absl::Duration op_timeout = absl::Seconds(3))
      : keys_(keys) {
    for (int c = 0; c < clients; ++c) {
      std::shared_ptr<client::Clerk> clerk = NewKvClerk(cluster, op_timeout);
      threads_.emplace_back([this, clerk, c] { Run(*clerk, c); });
    }
  }
  ~KvWorkload() { Stop(); }
  KvWorkload(const KvWorkload&) = delete;
  KvWorkload& operator=(const KvWorkload&) = delete;

  // Ends the load (each client finishes its operation in flight). Idempotent.
  void Stop() {
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  lincheck::HistoryRecorder& history() { return history_; }
  // Operations acknowledged so far.
  int64_t acknowledged() const { return acknowledged_.load(); }
  // "key/token;" -> whether that append was acknowledged.
  std::map<std::string, bool> appends() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return appends_;
  }

 private:
  void Run(client::Clerk& clerk, int c) {
    std::mt19937 rng(1000 + c);
    for (int n = 0; !stop_; ++n) {
      const int what = static_cast<int>(rng() % 10);
      const int k = static_cast<int>(rng() % keys_);
      if (what < 4) {
        const std::string key = rng() % 2 ? absl::StrCat("a", k) : absl::StrCat("k", k);
        auto h = history_.Begin(c, lincheck::OpKind::kGet, key);
        auto r = clerk.Get(key);
        if (r.ok()) {
          history_.End(h, r->value, r->found);
          acknowledged_++;
        } else {
          history_.Discard(h);  // a failed read has no effect
        }
        continue;
      }
      const bool append = what < 8;
      const std::string key = append ? absl::StrCat("a", k) : absl::StrCat("k", k);
      const std::string value = absl::StrCat("c", c, ".", n, ";");
      if (append) {
        absl::MutexLock lock(&mu_);
        appends_[key + "/" + value] = false;
      }
      auto h = history_.Begin(c, append ? lincheck::OpKind::kAppend : lincheck::OpKind::kPut, key,
                              value);
      const absl::Status st = append ? clerk.Append(key, value) : clerk.Put(key, value);
      if (!st.ok()) continue;  // outcome unknown: the operation stays open in the history
      history_.End(h);
      acknowledged_++;
      if (append) {
        absl::MutexLock lock(&mu_);
        appends_[key + "/" + value] = true;
      }
    }
  }

  const int keys_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> acknowledged_{0};
  lincheck::HistoryRecorder history_;
  absl::Mutex mu_;
  std::map<std::string, bool> appends_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

}  // namespace ds::kv::testing
