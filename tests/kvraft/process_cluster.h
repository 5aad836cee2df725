// A cluster of real kvraft-server processes on loopback for multi-process
// tests: reserved ports, one data directory per replica under a temporary
// directory (removed at the end), kill -9 / SIGSTOP / SIGCONT / restart.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/clerk.h"
#include "common/net.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "tests/lincheck/linearizability.h"

namespace ds::kv::testing {

class ProcessCluster {
 public:
  // Starts n replicas; extra_flags go to every replica.
  ProcessCluster(int n, std::vector<std::string> extra_flags = {})
      : extra_flags_(std::move(extra_flags)) {
    std::string tmpl = ::testing::TempDir() + "/kvraft_cluster.XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    dir_ = tmpl;
    std::vector<std::string> peers;
    for (int i = 0; i < n; ++i) {
      auto port = common::ReserveFreePort();
      if (!port.ok()) std::abort();
      peers.push_back(absl::StrCat(i + 1, "=", port->address()));
      endpoints_.push_back(port->address());
      ports_.push_back(std::move(*port));
    }
    peers_flag_ = absl::StrJoin(peers, ",");
    procs_.resize(n);
    for (int i = 0; i < n; ++i) Start(i);
  }

  ~ProcessCluster() {
    for (auto& p : procs_) p.reset();  // kill -9 and reap
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  int size() const { return static_cast<int>(procs_.size()); }
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  std::string log_path(int i) const { return absl::StrCat(dir_, "/", i + 1, ".log"); }

  void Start(int i) {
    std::vector<std::string> argv = {common::BinaryPath("kvraft-server"),
                                     absl::StrCat("--id=", i + 1), "--peers=" + peers_flag_,
                                     absl::StrCat("--data-dir=", dir_, "/", i + 1)};
    argv.insert(argv.end(), extra_flags_.begin(), extra_flags_.end());
    auto p = common::Subprocess::Start({.argv = argv, .log_path = log_path(i)});
    if (!p.ok()) std::abort();
    procs_[i] = std::move(*p);
  }
  bool running(int i) { return procs_[i] != nullptr && procs_[i]->running(); }
  absl::Status WaitHealthy(int i) {
    return procs_[i]->WaitHealthy(endpoints_[i], absl::Seconds(30));
  }
  void Kill(int i) { procs_[i]->Kill(); }
  void Restart(int i) {
    procs_[i]->Kill();
    Start(i);
  }
  void Pause(int i) { procs_[i]->Stop(); }
  void Resume(int i) { procs_[i]->Continue(); }
  int Terminate(int i) { return procs_[i]->Terminate(absl::Seconds(10)); }

  std::unique_ptr<client::Clerk> NewClerk(absl::Duration op_timeout = absl::Seconds(5)) {
    auto c = client::Clerk::Create({.endpoints = endpoints_,
                                    .operation_timeout = op_timeout,
                                    .attempt_timeout = absl::Milliseconds(500)});
    if (!c.ok()) std::abort();
    return std::move(*c);
  }

  // The replica that says it is the leader, or -1.
  int Leader() {
    auto clerk = NewClerk();
    for (int i = 0; i < size(); ++i) {
      auto st = clerk->EndpointStatus(endpoints_[i]);
      if (st.ok() && st->role() == pb::ROLE_LEADER) return i;
    }
    return -1;
  }

 private:
  std::vector<std::string> extra_flags_;
  std::string dir_;
  std::string peers_flag_;
  std::vector<std::string> endpoints_;
  std::vector<common::PortReservation> ports_;
  std::vector<std::unique_ptr<common::Subprocess>> procs_;
};

// The checks every multi-process KV test makes on what its clients did.
//
// The recorded history is linearizable.
inline void ExpectLinearizable(const std::vector<lincheck::Operation>& history) {
  auto report = lincheck::CheckKvHistory(history, absl::Seconds(60));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->result, lincheck::CheckResult::kOk)
      << "history not linearizable: " << report->explanation;
}

// `appends` maps "key/token;" to whether that append was acknowledged; each
// token is appended to its key once. Every acknowledged append is in its
// key's final value exactly once, an unacknowledged one (outcome unknown) at
// most once, and nothing else is there. Reads the final values through a
// Clerk (the unary path).
inline void ExpectAppendsExactlyOnce(const std::map<std::string, bool>& appends,
                                     ProcessCluster& cluster) {
  auto clerk = cluster.NewClerk(absl::Seconds(20));
  std::map<std::string, std::string> finals;
  for (const auto& [key_token, acked] : appends) {
    const std::string key = key_token.substr(0, key_token.find('/'));
    if (finals.contains(key)) continue;
    auto r = clerk->Get(key);
    ASSERT_TRUE(r.ok()) << r.status();
    finals[key] = r->value;
  }
  std::map<std::string, int> seen;  // "key/token;" -> count
  for (const auto& [key, value] : finals) {
    for (absl::string_view t : absl::StrSplit(value, ';', absl::SkipEmpty())) {
      seen[absl::StrCat(key, "/", t, ";")]++;
    }
  }
  int acked = 0;
  for (const auto& [key_token, was_acked] : appends) {
    const int count = seen.contains(key_token) ? seen[key_token] : 0;
    if (was_acked) {
      ++acked;
      EXPECT_EQ(count, 1) << "acknowledged append " << key_token << " appears " << count
                          << " times";
    } else {
      EXPECT_LE(count, 1) << "unacknowledged append " << key_token << " appears " << count
                          << " times";
    }
  }
  for (const auto& [key_token, count] : seen) {
    EXPECT_TRUE(appends.contains(key_token)) << key_token << " was never appended";
  }
  EXPECT_GT(acked, 0);
}

}  // namespace ds::kv::testing
