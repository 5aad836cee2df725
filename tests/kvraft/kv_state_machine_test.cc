#include "kvraft/kv_state_machine.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace ds::kv {
namespace {

std::string Command(pb::OpType op, std::string key, std::string value = "", uint64_t client_id = 0,
                    uint64_t sequence = 0, int64_t time_micros = 0) {
  pb::KvCommand cmd;
  cmd.set_op(op);
  cmd.set_key(std::move(key));
  cmd.set_value(std::move(value));
  cmd.set_client_id(client_id);
  cmd.set_sequence(sequence);
  cmd.set_proposal_time_unix_micros(time_micros);
  return cmd.SerializeAsString();
}

std::string RegisterCommand(int64_t time_micros = 0) {
  pb::KvCommand cmd;
  cmd.set_op(pb::OP_REGISTER);
  cmd.set_proposal_time_unix_micros(time_micros);
  return cmd.SerializeAsString();
}

// Applies commands at consecutive indexes, like the RSM layer does.
class Applier {
 public:
  explicit Applier(KvStateMachineOptions options = {}) : sm_(options) {}
  absl::StatusOr<pb::KvResult> Apply(const std::string& command) {
    return sm_.Apply(command, sm_.applied_index() + 1);
  }
  // Opens a session; returns its client id (0 on failure, which fails the test).
  uint64_t Register(int64_t time_micros = 0) {
    absl::StatusOr<pb::KvResult> r = Apply(RegisterCommand(time_micros));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->client_id() : 0;
  }
  KvStateMachine& sm() { return sm_; }

 private:
  KvStateMachine sm_;
};

TEST(KvStateMachine, GetOfMissingKeyIsEmptyAndNotFound) {
  KvStateMachine sm;
  pb::KvResult result = sm.Get("nope");
  EXPECT_FALSE(result.found());
  EXPECT_EQ(result.value(), "");
}

TEST(KvStateMachine, PutAppendGetDeleteFollow6824Semantics) {
  Applier a;
  ASSERT_TRUE(a.Apply(Command(pb::OP_APPEND, "k", "x")).ok());  // append creates
  EXPECT_EQ(a.sm().Get("k").value(), "x");
  ASSERT_TRUE(a.Apply(Command(pb::OP_APPEND, "k", "y")).ok());
  EXPECT_EQ(a.sm().Get("k").value(), "xy");
  ASSERT_TRUE(a.Apply(Command(pb::OP_PUT, "k", "z")).ok());
  EXPECT_EQ(a.sm().Get("k").value(), "z");

  absl::StatusOr<pb::KvResult> get = a.Apply(Command(pb::OP_GET, "k"));
  ASSERT_TRUE(get.ok());
  EXPECT_TRUE(get->found());
  EXPECT_EQ(get->value(), "z");

  absl::StatusOr<pb::KvResult> del = a.Apply(Command(pb::OP_DELETE, "k"));
  ASSERT_TRUE(del.ok());
  EXPECT_TRUE(del->found());
  EXPECT_FALSE(a.sm().Get("k").found());
  del = a.Apply(Command(pb::OP_DELETE, "k"));
  ASSERT_TRUE(del.ok());
  EXPECT_FALSE(del->found());
  EXPECT_EQ(a.sm().key_count(), 0);
  EXPECT_EQ(a.sm().data_bytes(), 0);
}

TEST(KvStateMachine, PutOfEmptyValueIsFound) {
  Applier a;
  ASSERT_TRUE(a.Apply(Command(pb::OP_PUT, "k", "")).ok());
  EXPECT_TRUE(a.sm().Get("k").found());
  EXPECT_EQ(a.sm().Get("k").value(), "");
}

TEST(KvStateMachine, RegisterReturnsTheLogIndexAsTheClientId) {
  KvStateMachine sm;
  absl::StatusOr<pb::KvResult> first = sm.Apply(RegisterCommand(), 5);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->client_id(), 5u);
  absl::StatusOr<pb::KvResult> second = sm.Apply(RegisterCommand(), 9);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->client_id(), 9u);
  EXPECT_EQ(sm.session_count(), 2);
  ASSERT_TRUE(sm.Apply(Command(pb::OP_PUT, "k", "v", 5, 1), 10).ok());
  EXPECT_EQ(sm.Get("k").value(), "v");
}

TEST(KvStateMachine, WriteOfAnUnregisteredClientIsRefusedEvenAtSequenceOne) {
  Applier a;
  EXPECT_EQ(a.Apply(Command(pb::OP_APPEND, "k", "x", 42, 1)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(a.sm().Get("k").found());
  EXPECT_EQ(a.sm().session_count(), 0);
}

TEST(KvStateMachine, RetriedRegisterOpensAnotherSession) {
  Applier a;
  // Registers carry no sequence and are not deduplicated, even if a client
  // sets client_id and sequence on one: the retry is a second session.
  pb::KvCommand cmd;
  cmd.set_op(pb::OP_REGISTER);
  cmd.set_client_id(3);
  cmd.set_sequence(1);
  absl::StatusOr<pb::KvResult> first = a.Apply(cmd.SerializeAsString());
  absl::StatusOr<pb::KvResult> retry = a.Apply(cmd.SerializeAsString());
  ASSERT_TRUE(first.ok() && retry.ok());
  EXPECT_NE(first->client_id(), retry->client_id());
  EXPECT_EQ(a.sm().session_count(), 2);
}

TEST(KvStateMachine, RetriedAppendIsAppliedOnce) {
  Applier a;
  const uint64_t id = a.Register();
  const std::string append = Command(pb::OP_APPEND, "k", "x", id, 1);
  ASSERT_TRUE(a.Apply(append).ok());
  // The same command committed again (client retried after a leader change).
  ASSERT_TRUE(a.Apply(append).ok());
  EXPECT_EQ(a.sm().Get("k").value(), "x");
  ASSERT_TRUE(a.Apply(Command(pb::OP_APPEND, "k", "y", id, 2)).ok());
  EXPECT_EQ(a.sm().Get("k").value(), "xy");
}

TEST(KvStateMachine, RetriedDeleteReturnsTheOriginalResult) {
  Applier a;
  const uint64_t one = a.Register();
  const uint64_t two = a.Register();
  ASSERT_TRUE(a.Apply(Command(pb::OP_PUT, "k", "v", one, 1)).ok());
  const std::string del = Command(pb::OP_DELETE, "k", "", two, 1);
  absl::StatusOr<pb::KvResult> first = a.Apply(del);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(first->found());
  // Executing it again would say found=false; the cache answers found=true.
  absl::StatusOr<pb::KvResult> retry = a.Apply(del);
  ASSERT_TRUE(retry.ok());
  EXPECT_TRUE(retry->found());
}

TEST(KvStateMachine, OlderCommandOfAClientIsRefusedNotApplied) {
  Applier a;
  const uint64_t id = a.Register();
  const std::string first = Command(pb::OP_APPEND, "k", "1", id, 1);
  ASSERT_TRUE(a.Apply(first).ok());
  ASSERT_TRUE(a.Apply(Command(pb::OP_APPEND, "k", "2", id, 2)).ok());
  EXPECT_EQ(a.Apply(first).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(a.sm().Get("k").value(), "12");
}

TEST(KvStateMachine, SessionlessWritesAreNotDeduplicated) {
  Applier a;
  const std::string append = Command(pb::OP_APPEND, "k", "x");
  ASSERT_TRUE(a.Apply(append).ok());
  ASSERT_TRUE(a.Apply(append).ok());
  EXPECT_EQ(a.sm().Get("k").value(), "xx");
  EXPECT_EQ(a.sm().session_count(), 0);
}

TEST(KvStateMachine, GetsNeedNoSessionAndDoNotConsumeSequenceNumbers) {
  Applier a;
  ASSERT_TRUE(a.Apply(Command(pb::OP_GET, "k", "", 42, 1)).ok());  // no session
  EXPECT_EQ(a.sm().session_count(), 0);
  const uint64_t id = a.Register();
  ASSERT_TRUE(a.Apply(Command(pb::OP_GET, "k", "", id, 1)).ok());
  ASSERT_TRUE(a.Apply(Command(pb::OP_PUT, "k", "v", id, 1)).ok());
  EXPECT_EQ(a.sm().Get("k").value(), "v");
}

TEST(KvStateMachine, ExpiredSessionRefusesARetryInsteadOfApplyingItTwice) {
  Applier a({.sessions = {.session_ttl = absl::Seconds(10)}});
  const int64_t t0 = 1'700'000'000'000'000;
  const uint64_t id = a.Register(t0);
  const std::string append = Command(pb::OP_APPEND, "k", "x", id, 2, t0);
  ASSERT_TRUE(a.Apply(Command(pb::OP_APPEND, "k", "w", id, 1, t0)).ok());
  ASSERT_TRUE(a.Apply(append).ok());
  // Another client's command, proposed 11 s later, moves the logical clock.
  const uint64_t other = a.Register(t0 + 11'000'000);
  ASSERT_TRUE(a.Apply(Command(pb::OP_PUT, "other", "v", other, 1, t0 + 11'000'000)).ok());
  EXPECT_EQ(a.sm().session_count(), 1);
  // The retry of sequence 2, committed late, is refused.
  EXPECT_EQ(a.Apply(append).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.sm().Get("k").value(), "wx");
}

// The hole that registration closes: with sessions opened implicitly by
// sequence 1, this retry looked like a new client and was applied again.
TEST(KvStateMachine, FirstWriteRetriedAfterItsSessionExpiredIsNotAppliedTwice) {
  Applier a({.sessions = {.session_ttl = absl::Seconds(10)}});
  const int64_t t0 = 1'700'000'000'000'000;
  const uint64_t id = a.Register(t0);
  const std::string append = Command(pb::OP_APPEND, "k", "x", id, 1, t0);
  ASSERT_TRUE(a.Apply(append).ok());
  // A register proposed 11 s later (a leader whose clock is ahead will do)
  // advances the logical clock and expires the session.
  a.Register(t0 + 11'000'000);
  EXPECT_EQ(a.Apply(append).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.sm().Get("k").value(), "x");
}

TEST(KvStateMachine, FirstWriteRetriedAfterEvictionIsNotAppliedTwice) {
  Applier a({.sessions = {.max_sessions = 1}});
  const uint64_t id = a.Register();
  const std::string append = Command(pb::OP_APPEND, "k", "x", id, 1);
  ASSERT_TRUE(a.Apply(append).ok());
  a.Register();  // evicts the session of `id`
  EXPECT_EQ(a.sm().session_count(), 1);
  EXPECT_EQ(a.Apply(append).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.sm().Get("k").value(), "x");
}

TEST(KvStateMachine, RegisterExpiresIdleSessionsLikeAnyCommand) {
  Applier a({.sessions = {.session_ttl = absl::Seconds(10)}});
  a.Register(0);
  a.Register(10'000'001);
  EXPECT_EQ(a.sm().clock_unix_micros(), 10'000'001);
  EXPECT_EQ(a.sm().session_count(), 1);
}

TEST(KvStateMachine, LogicalClockNeverGoesBack) {
  Applier a;
  ASSERT_TRUE(a.Apply(Command(pb::OP_PUT, "k", "v", 0, 0, 5000)).ok());
  // A new leader whose wall clock is behind proposes an older time.
  ASSERT_TRUE(a.Apply(Command(pb::OP_PUT, "k", "v", 0, 0, 3000)).ok());
  EXPECT_EQ(a.sm().clock_unix_micros(), 5000);
}

TEST(KvStateMachine, EntryAtOrBelowTheAppliedIndexIsRefused) {
  KvStateMachine sm;
  ASSERT_TRUE(sm.Apply(Command(pb::OP_APPEND, "k", "x"), 5).ok());
  EXPECT_EQ(sm.Apply(Command(pb::OP_APPEND, "k", "x"), 5).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(sm.Apply(Command(pb::OP_APPEND, "k", "x"), 3).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(sm.Get("k").value(), "x");
  EXPECT_EQ(sm.applied_index(), 5u);
}

TEST(KvStateMachine, BadEntriesFailButAdvanceTheIndex) {
  Applier a;
  EXPECT_TRUE(a.Apply("").ok());  // the leader's no-op
  EXPECT_EQ(a.Apply("\xff\xff\xff").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.Apply(Command(pb::OP_UNSPECIFIED, "k")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.Apply(Command(pb::OP_PUT, "k", "v", 42, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.sm().applied_index(), 4u);
  EXPECT_EQ(a.sm().key_count(), 0);
}

TEST(KvStateMachine, SnapshotRestoreReproducesDataSessionsClockAndIndex) {
  KvStateMachineOptions options{.sessions = {.session_ttl = absl::Seconds(10)}};
  Applier a(options);
  const uint64_t one = a.Register(500);
  const uint64_t two = a.Register(500);
  ASSERT_TRUE(a.Apply(Command(pb::OP_PUT, "b", "2", one, 1, 1000)).ok());
  ASSERT_TRUE(a.Apply(Command(pb::OP_APPEND, "a", "1", two, 1, 2000)).ok());
  const std::string snapshot = a.sm().Snapshot();

  KvStateMachine restored(options);
  ASSERT_TRUE(restored.Restore(snapshot).ok());
  EXPECT_EQ(restored.applied_index(), 4u);
  EXPECT_EQ(restored.clock_unix_micros(), 2000);
  EXPECT_EQ(restored.Get("a").value(), "1");
  EXPECT_EQ(restored.Get("b").value(), "2");
  EXPECT_EQ(restored.data_bytes(), a.sm().data_bytes());
  EXPECT_EQ(restored.Snapshot(), snapshot);
  // The dedup table came along: the retried append is not applied again.
  ASSERT_TRUE(restored.Apply(Command(pb::OP_APPEND, "a", "1", two, 1, 2000), 5).ok());
  EXPECT_EQ(restored.Get("a").value(), "1");
  // And entries the snapshot covers are refused.
  EXPECT_FALSE(restored.Apply(Command(pb::OP_PUT, "c", "3"), 4).ok());
}

TEST(KvStateMachine, RegisteredSessionsSurviveSnapshotAndRestore) {
  Applier a;
  const uint64_t used = a.Register();
  const uint64_t unused = a.Register();  // last sequence 0 in the snapshot
  ASSERT_TRUE(a.Apply(Command(pb::OP_APPEND, "k", "x", used, 1)).ok());
  const std::string snapshot = a.sm().Snapshot();

  KvStateMachine restored;
  ASSERT_TRUE(restored.Restore(snapshot).ok());
  EXPECT_EQ(restored.session_count(), 2);
  EXPECT_EQ(restored.Snapshot(), snapshot);
  ASSERT_TRUE(restored.Apply(Command(pb::OP_APPEND, "k", "x", used, 1), 4).ok());
  ASSERT_TRUE(restored.Apply(Command(pb::OP_APPEND, "k", "y", unused, 1), 5).ok());
  EXPECT_EQ(restored.Get("k").value(), "xy");
  // New ids continue from the log index, past every restored one.
  absl::StatusOr<pb::KvResult> next = restored.Apply(RegisterCommand(), 6);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->client_id(), 6u);
}

TEST(KvStateMachine, ReplicasApplyingTheSameLogHaveIdenticalSnapshots) {
  // Clients 1..7 register at indexes 1..7; some registers later leave unused
  // sessions behind, as retried registers do.
  std::vector<std::string> log;
  for (int c = 1; c <= 7; ++c) log.push_back(RegisterCommand());
  for (int i = 0; i < 200; ++i) {
    if (i % 50 == 25) log.push_back(RegisterCommand(1000 * i));
    const uint64_t client = 1 + i % 7;
    const pb::OpType op = i % 5 == 0 ? pb::OP_DELETE : i % 3 == 0 ? pb::OP_PUT : pb::OP_APPEND;
    log.push_back(Command(op, "key" + std::to_string(i % 11), std::to_string(i), client, 1 + i / 7,
                          1000 * i));
    if (i % 13 == 0) log.push_back(log.back());  // a duplicated proposal
  }
  KvStateMachineOptions options{.sessions = {.session_ttl = absl::Milliseconds(50)}};
  KvStateMachine one(options), two(options);
  for (size_t i = 0; i < log.size(); ++i) {
    absl::StatusOr<pb::KvResult> r1 = one.Apply(log[i], i + 1);
    absl::StatusOr<pb::KvResult> r2 = two.Apply(log[i], i + 1);
    ASSERT_EQ(r1.status(), r2.status());
    if (r1.ok()) {
      EXPECT_EQ(r1->SerializeAsString(), r2->SerializeAsString());
    }
  }
  EXPECT_EQ(one.Snapshot(), two.Snapshot());

  // A replica that restores a mid-log snapshot and replays the rest converges too.
  KvStateMachine three(options);
  KvStateMachine prefix(options);
  for (size_t i = 0; i < log.size() / 2; ++i) (void)prefix.Apply(log[i], i + 1);
  ASSERT_TRUE(three.Restore(prefix.Snapshot()).ok());
  for (size_t i = log.size() / 2; i < log.size(); ++i) (void)three.Apply(log[i], i + 1);
  EXPECT_EQ(three.Snapshot(), one.Snapshot());
}

TEST(KvStateMachine, RestoreOfGarbageFailsAndKeepsTheState) {
  Applier a;
  ASSERT_TRUE(a.Apply(Command(pb::OP_PUT, "k", "v")).ok());
  EXPECT_EQ(a.sm().Restore("\xff\xff").code(), absl::StatusCode::kInvalidArgument);
  pb::KvSnapshot dup;
  for (int i = 0; i < 2; ++i) {
    pb::KvPair* pair = dup.add_data();
    pair->set_key("x");
  }
  EXPECT_EQ(a.sm().Restore(dup.SerializeAsString()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.sm().Get("k").value(), "v");
  EXPECT_EQ(a.sm().applied_index(), 1u);
}

}  // namespace
}  // namespace ds::kv
