// SessionStateMachine over a tiny application (an append-only string log), so
// that what the session layer adds (exactly-once, the logical clock, expiry,
// the watermark, the applied index, snapshots) is tested apart from any real
// service.
#include "raft/rsm/session_state_machine.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace ds::rsm {
namespace {

// Debian's absl::string_view is not std::string_view: convert explicitly.
absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// A log of strings. Commands:
//   "+S"  appends S; the result is the log's new length ("1", "2", ...), so an
//         answer tells which application of a command produced it.
//   "?N"  changes nothing; succeeds ("ok") once the log has at least N
//         entries, else fails with kFailedPrecondition (as shardkv fails a key
//         of a shard it does not serve, until it does).
// Anything else fails with kInvalidArgument.
class LogApp final : public Application {
 public:
  absl::StatusOr<std::string> Apply(std::string_view command,
                                    const ApplyContext& context) override {
    last_context_ = context;
    ++calls_;
    if (!command.empty() && command[0] == '+') {
      log_.emplace_back(command.substr(1));
      return absl::StrCat(log_.size());
    }
    size_t n = 0;
    if (!command.empty() && command[0] == '?' && absl::SimpleAtoi(AsAbsl(command.substr(1)), &n)) {
      if (log_.size() < n) return absl::FailedPreconditionError("log too short");
      return std::string("ok");
    }
    return absl::InvalidArgumentError(absl::StrCat("bad command '", AsAbsl(command), "'"));
  }

  void SnapshotTo(std::string* out) const override {
    absl::StrAppend(out, AsAbsl(kMagic), absl::StrJoin(log_, "\n"));
  }

  absl::Status Restore(std::string_view snapshot) override {
    if (snapshot.substr(0, kMagic.size()) != kMagic) {
      return absl::InvalidArgumentError("not a LogApp snapshot");
    }
    snapshot.remove_prefix(kMagic.size());
    log_.clear();
    if (!snapshot.empty()) log_ = absl::StrSplit(AsAbsl(snapshot), '\n');
    return absl::OkStatus();
  }

  const std::vector<std::string>& log() const { return log_; }
  // Calls of Apply, failed ones included.
  int calls() const { return calls_; }
  const ApplyContext& last_context() const { return last_context_; }

 private:
  static constexpr std::string_view kMagic = "LogApp\n";
  std::vector<std::string> log_;
  int calls_ = 0;
  ApplyContext last_context_;
};

// A wall-clock-like time for proposal and creation times.
constexpr int64_t kT0 = 1'700'000'000'000'000;

// An application under a SessionStateMachine, fed entries at consecutive
// indexes as the Rsm does.
class Machine {
 public:
  explicit Machine(SessionOptions options = {}) : sm_(&app_, options) {}

  absl::StatusOr<std::string> Apply(const std::string& entry) {
    return sm_.Apply(entry, sm_.applied_index() + 1);
  }
  absl::StatusOr<std::string> Command(const pb::SessionRef& ref, std::string_view command,
                                      int64_t proposal_time = kT0) {
    return Apply(EncodeCommand(&ref, command, proposal_time));
  }
  absl::StatusOr<std::string> Sessionless(std::string_view command, int64_t proposal_time = kT0) {
    return Apply(EncodeCommand(nullptr, command, proposal_time));
  }
  absl::StatusOr<std::string> Open(const pb::SessionRef& ref, int64_t proposal_time = kT0) {
    return Apply(EncodeOpen(ref, proposal_time));
  }

  LogApp& app() { return app_; }
  SessionStateMachine& sm() { return sm_; }

 private:
  LogApp app_;
  SessionStateMachine sm_;
};

// ---- exactly-once ----

TEST(SessionStateMachine, FirstCommandOpensItsSessionInTheSameEntry) {
  Machine m;
  const pb::SessionRef ref = MakeSessionRef(7, kT0, 1);
  absl::StatusOr<std::string> r = m.Command(ref, "+a");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "1");
  EXPECT_EQ(m.sm().applied_index(), 1u);
  EXPECT_EQ(m.sm().session_count(), 1);
  EXPECT_EQ(m.sm().sessions().Check(ref), SessionTable::Verdict::kDuplicate);
  // The application saw the command with its session and the logical clock.
  EXPECT_EQ(m.app().last_context().index, 1u);
  EXPECT_EQ(m.app().last_context().clock_unix_micros, kT0);
  ASSERT_NE(m.app().last_context().session, nullptr);
}

TEST(SessionStateMachine, RetriedCommandGetsTheCachedResultAndIsNotAppliedAgain) {
  Machine m;
  const pb::SessionRef a1 = MakeSessionRef(1, kT0, 1);
  ASSERT_EQ(*m.Command(a1, "+x"), "1");
  ASSERT_EQ(*m.Command(MakeSessionRef(2, kT0, 1), "+y"), "2");
  // The same entry committed again (the client retried after a leader change):
  // applying it again would answer "3".
  absl::StatusOr<std::string> retry = m.Command(a1, "+x");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(*retry, "1");
  EXPECT_EQ(m.app().log(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(m.app().calls(), 2);
  EXPECT_EQ(*m.Command(MakeSessionRef(1, kT0, 2), "+z"), "3");
}

TEST(SessionStateMachine, OlderCommandOfASessionIsAlreadyExistsAndNotApplied) {
  Machine m;
  ASSERT_TRUE(m.Command(MakeSessionRef(1, kT0, 1), "+1").ok());
  ASSERT_TRUE(m.Command(MakeSessionRef(1, kT0, 2), "+2").ok());
  EXPECT_EQ(m.Command(MakeSessionRef(1, kT0, 1), "+1").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(m.app().log(), (std::vector<std::string>{"1", "2"}));
}

TEST(SessionStateMachine, SessionlessCommandIsAppliedWithoutDeduplication) {
  Machine m;
  ASSERT_EQ(*m.Sessionless("+x"), "1");
  EXPECT_EQ(m.app().last_context().session, nullptr);
  ASSERT_EQ(*m.Sessionless("+x"), "2");
  EXPECT_EQ(m.sm().session_count(), 0);
}

// ---- forgotten sessions: expiry, eviction, the watermark ----

TEST(SessionStateMachine, SessionIdleLongerThanTheTtlOnTheLogicalClockIsAborted) {
  Machine m({.session_ttl = absl::Seconds(10)});
  const pb::SessionRef a1 = MakeSessionRef(1, kT0 - 5, 1);
  ASSERT_TRUE(m.Command(a1, "+a", kT0).ok());
  // Another client's command, proposed 11 s later, moves the logical clock
  // past A's TTL; no wall clock is involved.
  ASSERT_TRUE(m.Command(MakeSessionRef(2, kT0 + 1, 1), "+b", kT0 + 11'000'000).ok());
  EXPECT_EQ(m.sm().session_count(), 1);
  EXPECT_EQ(m.sm().sessions().watermark_unix_micros(), kT0 - 5);

  // A's first command, committed again late, is refused, not applied twice.
  absl::StatusOr<std::string> retry = m.Command(a1, "+a", kT0);
  EXPECT_EQ(retry.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(SessionWatermark(retry.status()), kT0 - 5);
  // So is its next command: the session is gone.
  EXPECT_EQ(m.Command(MakeSessionRef(1, kT0 - 5, 2), "+a2", kT0 + 11'000'000).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(m.app().log(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(m.sm().session_count(), 1);
}

TEST(SessionStateMachine, ExpiryUsesTheClockOfTheEntryBeingApplied) {
  Machine m({.session_ttl = absl::Seconds(10)});
  ASSERT_TRUE(m.Command(MakeSessionRef(1, kT0, 1), "+a", kT0).ok());
  // The session's own next command, proposed after more than the TTL: the
  // clock advances first, so the session is forgotten before it is checked.
  absl::StatusOr<std::string> late = m.Command(MakeSessionRef(1, kT0, 2), "+b", kT0 + 10'000'001);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(SessionWatermark(late.status()), kT0);
  // Exactly the TTL later is still in time.
  Machine n({.session_ttl = absl::Seconds(10)});
  ASSERT_TRUE(n.Command(MakeSessionRef(1, kT0, 1), "+a", kT0).ok());
  EXPECT_TRUE(n.Command(MakeSessionRef(1, kT0, 2), "+b", kT0 + 10'000'000).ok());
}

TEST(SessionStateMachine, EvictedSessionIsAbortedWithTheWatermark) {
  Machine m({.max_sessions = 2});
  const pb::SessionRef a1 = MakeSessionRef(1, kT0 - 300, 1);
  ASSERT_TRUE(m.Command(a1, "+a").ok());
  ASSERT_TRUE(m.Command(MakeSessionRef(2, kT0 - 200, 1), "+b").ok());
  ASSERT_TRUE(m.Command(MakeSessionRef(3, kT0 - 100, 1), "+c").ok());  // evicts A (least recent)
  EXPECT_EQ(m.sm().session_count(), 2);
  absl::StatusOr<std::string> retry = m.Command(a1, "+a");
  EXPECT_EQ(retry.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(SessionWatermark(retry.status()), kT0 - 300);
  EXPECT_EQ(m.app().log(), (std::vector<std::string>{"a", "b", "c"}));
  // B is still there: its retry is answered from the cache.
  EXPECT_EQ(*m.Command(MakeSessionRef(2, kT0 - 200, 1), "+b"), "2");
}

TEST(SessionStateMachine, UnknownSessionAtOrBelowTheWatermarkIsAbortedEvenAtSequenceOne) {
  Machine m({.max_sessions = 1});
  ASSERT_TRUE(m.Command(MakeSessionRef(1, kT0 - 300, 1), "+a").ok());
  ASSERT_TRUE(
      m.Command(MakeSessionRef(2, kT0 - 200, 1), "+b").ok());  // evicts 1: watermark kT0 - 300
  ASSERT_EQ(m.sm().sessions().watermark_unix_micros(), kT0 - 300);
  // Ids never seen, created at or before the watermark.
  EXPECT_EQ(m.Command(MakeSessionRef(9, kT0 - 300, 1), "+x").status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(m.Command(MakeSessionRef(9, kT0 - 301, 1), "+x").status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(m.app().log().size(), 2u);
  // A session created after the watermark is new and accepted.
  absl::StatusOr<std::string> fresh = m.Command(MakeSessionRef(9, kT0 - 299, 1), "+x");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(*fresh, "3");
}

// ---- application errors ----

TEST(SessionStateMachine, ApplicationErrorOpensNoSessionAndTheRetryIsEvaluatedAgain) {
  Machine m;
  const pb::SessionRef a1 = MakeSessionRef(1, kT0, 1);
  EXPECT_EQ(m.Command(a1, "?1").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m.sm().session_count(), 0) << "a failed first command opened its session";
  ASSERT_TRUE(m.Sessionless("+x").ok());
  // The same command again: not a cached error, evaluated on the new state.
  absl::StatusOr<std::string> retry = m.Command(a1, "?1");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(*retry, "ok");
  EXPECT_EQ(m.sm().session_count(), 1);
}

TEST(SessionStateMachine, ApplicationErrorOfAKnownSessionRecordsNothing) {
  Machine m;
  ASSERT_EQ(*m.Command(MakeSessionRef(1, kT0, 1), "+a"), "1");
  EXPECT_EQ(m.Command(MakeSessionRef(1, kT0, 2), "?5").status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Sequence 1 is still the latest: its cached answer, and 2 is still new.
  EXPECT_EQ(*m.Command(MakeSessionRef(1, kT0, 1), "+a"), "1");
  EXPECT_EQ(m.sm().sessions().Check(MakeSessionRef(1, kT0, 2)), SessionTable::Verdict::kNew);
  EXPECT_EQ(*m.Command(MakeSessionRef(1, kT0, 2), "+b"), "2");
}

// ---- explicit open (Register) ----

TEST(SessionStateMachine, OpenOnlyOpensTheSessionAndIsIdempotent) {
  Machine m;
  const pb::SessionRef ref = MakeSessionRef(1, kT0, 0);
  absl::StatusOr<std::string> open = m.Open(ref);
  ASSERT_TRUE(open.ok()) << open.status();
  EXPECT_EQ(m.sm().session_count(), 1);
  EXPECT_EQ(m.app().calls(), 0) << "open-only reached the application";
  EXPECT_TRUE(m.Open(ref).ok());
  EXPECT_EQ(m.sm().session_count(), 1);

  ASSERT_EQ(*m.Command(MakeSessionRef(1, kT0, 1), "+a"), "1");
  // Opening a session that has applied commands changes nothing.
  EXPECT_TRUE(m.Open(ref).ok());
  EXPECT_EQ(*m.Command(MakeSessionRef(1, kT0, 1), "+a"), "1");
  EXPECT_EQ(m.app().calls(), 1);
}

TEST(SessionStateMachine, OpenOnlyOfAForgottenSessionIsAborted) {
  Machine m({.max_sessions = 1});
  ASSERT_TRUE(m.Open(MakeSessionRef(1, kT0 - 100, 0)).ok());
  ASSERT_TRUE(m.Open(MakeSessionRef(2, kT0 - 50, 0)).ok());  // evicts 1
  absl::StatusOr<std::string> reopen = m.Open(MakeSessionRef(1, kT0 - 100, 0));
  EXPECT_EQ(reopen.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(SessionWatermark(reopen.status()), kT0 - 100);
}

TEST(SessionStateMachine, OpenOnlyWithoutASessionIsInvalidArgument) {
  Machine m;
  pb::SessionCommand cmd;
  cmd.set_open_only(true);
  cmd.set_proposal_time_unix_micros(kT0);
  EXPECT_EQ(m.Apply(cmd.SerializeAsString()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.sm().applied_index(), 1u);
}

TEST(SessionStateMachine, SessionCreatedTooFarInTheFutureIsInvalidArgument) {
  Machine m({.max_clock_skew = absl::Minutes(10)});
  const int64_t skew = 10 * 60 * 1'000'000LL;
  // Created further ahead of the leader's clock than the skew allows:
  // forgotten later, it would push the watermark into the future.
  EXPECT_EQ(m.Command(MakeSessionRef(1, kT0 + skew + 1, 1), "+a", kT0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.Open(MakeSessionRef(2, kT0 + skew + 1, 0), kT0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.sm().session_count(), 0);
  EXPECT_EQ(m.app().calls(), 0);
  // Exactly the skew ahead is accepted.
  EXPECT_TRUE(m.Command(MakeSessionRef(3, kT0 + skew, 1), "+a", kT0).ok());
  EXPECT_EQ(m.sm().session_count(), 1);
}

// ---- entries and the applied index ----

TEST(SessionStateMachine, EntriesAtOrBelowTheAppliedIndexAreRefused) {
  Machine m;
  ASSERT_TRUE(m.sm().Apply(EncodeCommand(nullptr, "+x", kT0), 5).ok());
  EXPECT_EQ(m.sm().Apply(EncodeCommand(nullptr, "+y", kT0), 5).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m.sm().Apply(EncodeCommand(nullptr, "+y", kT0), 3).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m.app().log(), (std::vector<std::string>{"x"}));
  EXPECT_EQ(m.sm().applied_index(), 5u);
}

TEST(SessionStateMachine, EmptyEntryOnlyAdvancesTheIndex) {
  Machine m;
  ASSERT_TRUE(m.Sessionless("+x", kT0).ok());
  absl::StatusOr<std::string> noop = m.Apply("");  // a new leader's no-op
  ASSERT_TRUE(noop.ok()) << noop.status();
  EXPECT_EQ(*noop, "");
  EXPECT_EQ(m.sm().applied_index(), 2u);
  EXPECT_EQ(m.sm().clock_unix_micros(), kT0);
  EXPECT_EQ(m.app().calls(), 1);
}

TEST(SessionStateMachine, BadEntriesFailButAdvanceTheIndex) {
  Machine m;
  EXPECT_EQ(m.Apply("\xff\xff\xff").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.Command(MakeSessionRef(0, kT0, 1), "+a").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.Command(MakeSessionRef(1, 0, 1), "+a").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.Command(MakeSessionRef(1, kT0, 0), "+a").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.sm().applied_index(), 4u);
  EXPECT_EQ(m.sm().session_count(), 0);
  EXPECT_EQ(m.app().calls(), 0);
}

TEST(SessionStateMachine, LogicalClockIsTheLatestProposalTime) {
  Machine m;
  ASSERT_TRUE(m.Sessionless("+a", 5000).ok());
  // A new leader whose wall clock is behind proposes an older time.
  ASSERT_TRUE(m.Sessionless("+b", 3000).ok());
  EXPECT_EQ(m.sm().clock_unix_micros(), 5000);
  EXPECT_EQ(m.app().last_context().clock_unix_micros, 5000);
  ASSERT_TRUE(m.Sessionless("+c", 0).ok());  // 0: does not advance it
  EXPECT_EQ(m.sm().clock_unix_micros(), 5000);
  ASSERT_TRUE(m.Sessionless("+d", 7000).ok());
  EXPECT_EQ(m.sm().clock_unix_micros(), 7000);
}

TEST(SessionStateMachine, SessionCountFollowsOpensExpiryAndEviction) {
  Machine m({.session_ttl = absl::Seconds(10), .max_sessions = 2});
  EXPECT_EQ(m.sm().session_count(), 0);
  ASSERT_TRUE(m.Command(MakeSessionRef(1, kT0, 1), "+a", kT0).ok());
  ASSERT_TRUE(m.Open(MakeSessionRef(2, kT0, 0), kT0).ok());
  EXPECT_EQ(m.sm().session_count(), 2);
  ASSERT_TRUE(m.Command(MakeSessionRef(3, kT0, 1), "+c", kT0).ok());  // evicts one
  EXPECT_EQ(m.sm().session_count(), 2);
  ASSERT_TRUE(m.Sessionless("+d", kT0 + 11'000'000).ok());  // expires both
  EXPECT_EQ(m.sm().session_count(), 0);
}

// ---- snapshots ----

TEST(SessionStateMachine, SnapshotRestoreReproducesSessionsWatermarkClockIndexAndApp) {
  const SessionOptions options{.session_ttl = absl::Seconds(10), .max_sessions = 2};
  Machine m(options);
  const pb::SessionRef a1 = MakeSessionRef(1, kT0 - 300, 1);
  ASSERT_TRUE(m.Command(a1, "+a", kT0).ok());
  ASSERT_TRUE(m.Command(MakeSessionRef(2, kT0 - 200, 1), "+b", kT0 + 1000).ok());
  ASSERT_TRUE(m.Command(MakeSessionRef(3, kT0 - 100, 1), "+c", kT0 + 2000).ok());  // evicts 1
  ASSERT_TRUE(m.Open(MakeSessionRef(4, kT0 - 50, 0), kT0 + 3000).ok());            // evicts 2
  const std::string snapshot = m.sm().Snapshot();

  Machine restored(options);
  ASSERT_TRUE(restored.sm().Restore(snapshot).ok());
  EXPECT_EQ(restored.sm().applied_index(), 4u);
  EXPECT_EQ(restored.sm().clock_unix_micros(), kT0 + 3000);
  EXPECT_EQ(restored.sm().session_count(), 2);
  EXPECT_EQ(restored.sm().sessions().watermark_unix_micros(), kT0 - 200);
  EXPECT_EQ(restored.app().log(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(restored.sm().Snapshot(), snapshot);
  // Entries the snapshot covers are refused; the session table came along: a
  // retry is answered from it and a forgotten session is refused.
  EXPECT_EQ(restored.sm().Apply(EncodeCommand(nullptr, "+z", kT0), 4).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(*restored.Command(MakeSessionRef(3, kT0 - 100, 1), "+c", kT0 + 3000), "3");
  EXPECT_EQ(restored.Command(a1, "+a", kT0 + 3000).status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(restored.app().log().size(), 3u);
}

TEST(SessionStateMachine, IdenticalHistoriesGiveIdenticalSnapshots) {
  // Seven clients writing with retries, duplicates, a stale entry, explicit
  // opens, expiry and eviction along the way.
  std::vector<std::string> log;
  for (int i = 0; i < 200; ++i) {
    const uint64_t client = 1 + i % 7;
    const int64_t time = kT0 + 10'000 * i;
    const pb::SessionRef ref =
        MakeSessionRef(client, kT0 - 1000 + static_cast<int64_t>(client), 1 + i / 7);
    if (i % 40 == 5) log.push_back(EncodeOpen(MakeSessionRef(100 + i, time, 0), time));
    log.push_back(EncodeCommand(&ref, absl::StrCat("+", i), time));
    if (i % 13 == 0) log.push_back(log.back());  // a duplicated proposal
    if (i % 17 == 0) log.push_back("");          // a leader's no-op
  }
  const SessionOptions options{.session_ttl = absl::Milliseconds(300), .max_sessions = 6};
  Machine one(options), two(options);
  for (const std::string& entry : log) {
    absl::StatusOr<std::string> r1 = one.Apply(entry);
    absl::StatusOr<std::string> r2 = two.Apply(entry);
    ASSERT_EQ(r1.status(), r2.status());
    if (r1.ok()) {
      EXPECT_EQ(*r1, *r2);
    }
  }
  EXPECT_GT(one.sm().sessions().watermark_unix_micros(), 0) << "nothing was forgotten";
  EXPECT_EQ(one.sm().Snapshot(), two.sm().Snapshot());

  // A replica that restores a mid-log snapshot and replays the rest converges too.
  Machine prefix(options), three(options);
  for (size_t i = 0; i < log.size() / 2; ++i) (void)prefix.Apply(log[i]);
  ASSERT_TRUE(three.sm().Restore(prefix.sm().Snapshot()).ok());
  for (size_t i = log.size() / 2; i < log.size(); ++i) (void)three.Apply(log[i]);
  EXPECT_EQ(three.sm().Snapshot(), one.sm().Snapshot());
}

TEST(SessionStateMachine, RestoreOfGarbageFailsAndLeavesTheStateUnchanged) {
  Machine m;
  ASSERT_TRUE(m.Command(MakeSessionRef(1, kT0, 1), "+a").ok());
  const std::string before = m.sm().Snapshot();
  const uint64_t header_length = [&] {
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i)
      n |= static_cast<uint64_t>(static_cast<uint8_t>(before[i])) << (8 * i);
    return n;
  }();
  ASSERT_LT(header_length, before.size());

  std::vector<std::string> garbage = {
      "",                                   // no length
      "\xff\xff",                           // short length
      std::string(8, '\xff') + "xyz",       // length past the end
      std::string(8, '\0') + "not LogApp",  // empty header; the application refuses
      // A good header with bytes the application refuses.
      before.substr(0, 8 + header_length) + "garbage",
  };
  // A header with a session table the table refuses (a duplicate client).
  pb::SessionSnapshotHeader dup;
  dup.set_applied_index(9);
  for (int i = 0; i < 2; ++i) {
    pb::ClientSession* s = dup.mutable_sessions()->add_sessions();
    s->set_client_id(5);
    s->set_created_unix_micros(kT0);
  }
  std::string dup_bytes = dup.SerializeAsString();
  std::string framed;
  for (int i = 0; i < 8; ++i)
    framed.push_back(static_cast<char>((dup_bytes.size() >> (8 * i)) & 0xff));
  garbage.push_back(framed + dup_bytes + "LogApp\n");

  for (const std::string& g : garbage) {
    EXPECT_FALSE(m.sm().Restore(g).ok()) << "accepted " << ::testing::PrintToString(g);
    EXPECT_EQ(m.sm().Snapshot(), before) << "changed by " << ::testing::PrintToString(g);
  }
  EXPECT_EQ(m.sm().applied_index(), 1u);
  EXPECT_EQ(m.sm().session_count(), 1);
  EXPECT_EQ(m.app().log(), (std::vector<std::string>{"a"}));
}

TEST(SessionStateMachine, SessionWatermarkOfOtherErrorsIsZero) {
  EXPECT_EQ(SessionWatermark(absl::OkStatus()), 0);
  EXPECT_EQ(SessionWatermark(absl::AbortedError("no payload")), 0);
  const absl::Status expired = SessionExpiredError(MakeSessionRef(1, 5, 1), 42);
  EXPECT_EQ(expired.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(SessionWatermark(expired), 42);
}

}  // namespace
}  // namespace ds::rsm
