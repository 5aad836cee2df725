// The RSM layer's request paths: asynchronous submits and linearizable reads
// complete exactly once, with the state machine's result, or with
// DEADLINE_EXCEEDED at their deadline when nothing can commit, or with
// UNAVAILABLE when the replica stops.
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "raft/rsm/rsm.h"
#include "raft/storage/memory_storage.h"

namespace ds::raft {
namespace {

constexpr absl::Duration kLong = absl::Seconds(10);

// Appends every command to a log; Apply returns "applied:<command>".
class LogMachine : public StateMachine {
 public:
  absl::StatusOr<std::string> Apply(const std::string& command, uint64_t index) override {
    applied_ = index;
    if (command.empty()) return std::string();
    log_.push_back(command);
    return "applied:" + command;
  }
  uint64_t applied_index() const override { return applied_; }
  std::string Snapshot() const override { return ""; }
  absl::Status Restore(const std::string&) override { return absl::OkStatus(); }
  const std::vector<std::string>& log() const { return log_; }

 private:
  uint64_t applied_ = 0;
  std::vector<std::string> log_;
};

// MemoryStorage whose Save blocks while the gate is closed: the leader can
// append nothing more, so nothing new commits.
class GatedStorage : public MemoryStorage {
 public:
  absl::Status Save(const pb::HardState* hs, const std::vector<pb::Entry>& entries,
                    bool sync) override {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](bool* open) { return *open; }, &open_));
    }
    return MemoryStorage::Save(hs, entries, sync);
  }
  void set_open(bool open) {
    absl::MutexLock lock(&mu_);
    open_ = open;
  }

 private:
  absl::Mutex mu_;
  bool open_ = true;
};

class NullTransport : public Transport {
 public:
  void Start(Handler) override {}
  void Send(std::vector<pb::Message>) override {}
  void Stop() override {}
};

// A one-voter group: it elects itself and commits on its own.
struct SingleReplica {
  SingleReplica() {
    NodeOptions options;
    options.id = 1;
    options.raft.peers = {1};
    options.tick_interval = absl::Milliseconds(5);
    auto s = std::make_unique<GatedStorage>();
    storage = s.get();
    auto r = Rsm::Start({}, options, std::move(s), std::make_unique<NullTransport>(), &sm);
    EXPECT_TRUE(r.ok()) << r.status();
    rsm = std::move(*r);
    const absl::Time deadline = absl::Now() + kLong;
    while (rsm->status().role != Role::kLeader && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    EXPECT_EQ(rsm->status().role, Role::kLeader);
    // Wait for the leader's own no-op entry to apply, so reads can be served.
    EXPECT_TRUE(rsm->Submit("warm-up", kLong).ok());
  }
  LogMachine sm;
  GatedStorage* storage = nullptr;
  std::unique_ptr<Rsm> rsm;
};

// Collects one asynchronous outcome and counts how often it was delivered.
struct Outcome {
  absl::Notification done;
  std::atomic<int> calls{0};
  absl::StatusOr<std::string> result;
  absl::Time at;
};

TEST(Rsm, SubmitAsyncDeliversTheStateMachineResult) {
  SingleReplica r;
  Outcome o;
  r.rsm->SubmitAsync("x", absl::Now() + kLong, [&](absl::StatusOr<std::string> res) {
    o.result = std::move(res);
    ++o.calls;
    o.done.Notify();
  });
  ASSERT_TRUE(o.done.WaitForNotificationWithTimeout(kLong));
  ASSERT_TRUE(o.result.ok()) << o.result.status();
  EXPECT_EQ(*o.result, "applied:x");
}

TEST(Rsm, ReadAsyncSeesEveryWriteCompletedBeforeIt) {
  SingleReplica r;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(r.rsm->Submit("w" + std::to_string(i), kLong).ok());
  Outcome o;
  size_t seen = 0;
  r.rsm->ReadAsync(
      absl::Now() + kLong,
      [&](const StateMachine& sm) { seen = static_cast<const LogMachine&>(sm).log().size(); },
      [&](absl::Status s) {
        o.result = s.ok() ? absl::StatusOr<std::string>("") : s;
        ++o.calls;
        o.done.Notify();
      });
  ASSERT_TRUE(o.done.WaitForNotificationWithTimeout(kLong));
  ASSERT_TRUE(o.result.ok()) << o.result.status();
  EXPECT_EQ(seen, 21u);  // warm-up + 20
}

TEST(Rsm, RequestsThatCannotCommitFailAtTheirDeadlineOnce) {
  SingleReplica r;
  r.storage->set_open(false);
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Milliseconds(200);
  Outcome write, read;
  bool query_ran = false;
  r.rsm->SubmitAsync("stuck", deadline, [&](absl::StatusOr<std::string> res) {
    write.result = std::move(res);
    write.at = absl::Now();
    ++write.calls;
    write.done.Notify();
  });
  // The Raft thread is blocked in Save, so the read point is never confirmed.
  r.rsm->ReadAsync(
      deadline, [&](const StateMachine&) { query_ran = true; },
      [&](absl::Status s) {
        read.result = s;
        read.at = absl::Now();
        ++read.calls;
        read.done.Notify();
      });
  ASSERT_TRUE(write.done.WaitForNotificationWithTimeout(kLong));
  ASSERT_TRUE(read.done.WaitForNotificationWithTimeout(kLong));
  EXPECT_EQ(write.result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(read.result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(query_ran);
  EXPECT_GE(write.at, deadline);
  EXPECT_LT(write.at - deadline, absl::Seconds(2));
  // Unblocked, the entry commits and applies, but its caller was already
  // answered: no second delivery.
  r.storage->set_open(true);
  ASSERT_TRUE(r.rsm->Submit("after", kLong).ok());
  r.rsm->Stop();
  EXPECT_EQ(write.calls.load(), 1);
  EXPECT_EQ(read.calls.load(), 1);
}

TEST(Rsm, StopFailsPendingRequestsOnceWithUnavailable) {
  SingleReplica r;
  r.storage->set_open(false);
  constexpr int kN = 8;
  std::vector<Outcome> outcomes(2 * kN);
  for (int i = 0; i < kN; ++i) {
    Outcome& w = outcomes[i];
    r.rsm->SubmitAsync("p" + std::to_string(i), absl::Now() + kLong,
                       [&w](absl::StatusOr<std::string> res) {
                         w.result = std::move(res);
                         ++w.calls;
                         w.done.Notify();
                       });
    Outcome& rd = outcomes[kN + i];
    r.rsm->ReadAsync(
        absl::Now() + kLong, [](const StateMachine&) {},
        [&rd](absl::Status s) {
          rd.result = s.ok() ? absl::StatusOr<std::string>("") : s;
          ++rd.calls;
          rd.done.Notify();
        });
  }
  // Stop joins the Raft thread, which is blocked in Save: open the gate a
  // little later, as a disk that finally answers would.
  std::thread opener([&] {
    absl::SleepFor(absl::Milliseconds(100));
    r.storage->set_open(true);
  });
  r.rsm->Stop();
  opener.join();
  for (Outcome& o : outcomes) {
    ASSERT_TRUE(o.done.WaitForNotificationWithTimeout(kLong));
    EXPECT_EQ(o.calls.load(), 1);
    // Either answered before Stop took effect, or failed by it.
    if (!o.result.ok()) {
      EXPECT_EQ(o.result.status().code(), absl::StatusCode::kUnavailable);
    }
  }
  // After Stop, requests fail at once.
  Outcome late;
  r.rsm->SubmitAsync("late", absl::Now() + kLong, [&](absl::StatusOr<std::string> res) {
    late.result = std::move(res);
    late.done.Notify();
  });
  ASSERT_TRUE(late.done.HasBeenNotified());
  EXPECT_EQ(late.result.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace ds::raft
