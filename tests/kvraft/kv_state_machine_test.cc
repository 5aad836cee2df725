// The KV application (kvraft/kv_state_machine.h): 6.824 semantics, its
// snapshot bytes, and that replicas applying the same log agree. Sessions,
// the logical clock and the applied index belong to rsm::SessionStateMachine
// and are tested with it (tests/rsm/session_state_machine_test.cc); here the
// KV machine runs under one only where the log entries need it.
#include "kvraft/kv_state_machine.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "raft/rsm/session_state_machine.h"

namespace ds::kv {
namespace {

pb::KvCommand Command(pb::OpType op, std::string key, std::string value = "") {
  pb::KvCommand cmd;
  cmd.set_op(op);
  cmd.set_key(std::move(key));
  cmd.set_value(std::move(value));
  return cmd;
}

// Keys, and bytes of keys and values, in the state machine's state.
int64_t KeyCount(const KvStateMachine& kv) {
  int64_t n = 0;
  kv.state().Scan("", "", [&n](std::string_view, std::string_view) { return ++n, true; });
  return n;
}
int64_t DataBytes(const KvStateMachine& kv) {
  int64_t n = 0;
  kv.state().Scan("", "", [&n](std::string_view k, std::string_view v) {
    n += static_cast<int64_t>(k.size() + v.size());
    return true;
  });
  return n;
}

// A KvStateMachine under the session layer, fed log entries at consecutive
// indexes as a replica's Rsm does.
class Replica {
 public:
  explicit Replica(rsm::SessionOptions options = {}) : sm_(&kv_, options) {}

  absl::StatusOr<std::string> Apply(const std::string& entry) {
    return sm_.Apply(entry, sm_.applied_index() + 1);
  }
  // `cmd` under session `client_id` (created at time 1) with `sequence`.
  absl::StatusOr<pb::KvResult> Write(const pb::KvCommand& cmd, uint64_t client_id,
                                     uint64_t sequence, int64_t time = 1000) {
    rsm::pb::SessionRef ref;
    ref.set_client_id(client_id);
    ref.set_created_unix_micros(1);
    ref.set_sequence(sequence);
    absl::StatusOr<std::string> r = Apply(rsm::EncodeCommand(&ref, cmd.SerializeAsString(), time));
    if (!r.ok()) return r.status();
    pb::KvResult result;
    if (!result.ParseFromString(*r)) return absl::InternalError("not a KvResult");
    return result;
  }

  KvStateMachine& kv() { return kv_; }
  rsm::SessionStateMachine& sm() { return sm_; }

 private:
  KvStateMachine kv_;
  rsm::SessionStateMachine sm_;
};

TEST(KvStateMachine, GetOfMissingKeyIsEmptyAndNotFound) {
  KvStateMachine kv;
  pb::KvResult result = kv.Get("nope");
  EXPECT_FALSE(result.found());
  EXPECT_EQ(result.value(), "");
}

TEST(KvStateMachine, PutAppendGetDeleteFollow6824Semantics) {
  KvStateMachine kv;
  ASSERT_TRUE(kv.Execute(Command(pb::OP_APPEND, "k", "x")).ok());  // append creates
  EXPECT_EQ(kv.Get("k").value(), "x");
  ASSERT_TRUE(kv.Execute(Command(pb::OP_APPEND, "k", "y")).ok());
  EXPECT_EQ(kv.Get("k").value(), "xy");
  ASSERT_TRUE(kv.Execute(Command(pb::OP_PUT, "k", "z")).ok());
  EXPECT_EQ(kv.Get("k").value(), "z");

  absl::StatusOr<pb::KvResult> get = kv.Execute(Command(pb::OP_GET, "k"));
  ASSERT_TRUE(get.ok());
  EXPECT_TRUE(get->found());
  EXPECT_EQ(get->value(), "z");

  absl::StatusOr<pb::KvResult> del = kv.Execute(Command(pb::OP_DELETE, "k"));
  ASSERT_TRUE(del.ok());
  EXPECT_TRUE(del->found());
  EXPECT_FALSE(kv.Get("k").found());
  del = kv.Execute(Command(pb::OP_DELETE, "k"));
  ASSERT_TRUE(del.ok());
  EXPECT_FALSE(del->found());
  EXPECT_EQ(KeyCount(kv), 0);
  EXPECT_EQ(DataBytes(kv), 0);
}

TEST(KvStateMachine, PutOfEmptyValueIsFound) {
  KvStateMachine kv;
  ASSERT_TRUE(kv.Execute(Command(pb::OP_PUT, "k", "")).ok());
  EXPECT_TRUE(kv.Get("k").found());
  EXPECT_EQ(kv.Get("k").value(), "");
}

TEST(KvStateMachine, DataBytesCountKeysAndValues) {
  KvStateMachine kv;
  ASSERT_TRUE(kv.Execute(Command(pb::OP_PUT, "ab", "xyz")).ok());
  EXPECT_EQ(DataBytes(kv), 5);
  ASSERT_TRUE(kv.Execute(Command(pb::OP_PUT, "ab", "x")).ok());  // replaced, shorter
  EXPECT_EQ(DataBytes(kv), 3);
  ASSERT_TRUE(kv.Execute(Command(pb::OP_APPEND, "ab", "1234")).ok());
  EXPECT_EQ(DataBytes(kv), 7);
  ASSERT_TRUE(kv.Execute(Command(pb::OP_APPEND, "c", "d")).ok());
  EXPECT_EQ(DataBytes(kv), 9);
  EXPECT_EQ(KeyCount(kv), 2);
  ASSERT_TRUE(kv.Execute(Command(pb::OP_DELETE, "ab")).ok());
  EXPECT_EQ(DataBytes(kv), 2);
}

TEST(KvStateMachine, BadCommandsAreInvalidArgumentAndChangeNothing) {
  KvStateMachine kv;
  ASSERT_TRUE(kv.Execute(Command(pb::OP_PUT, "k", "v")).ok());
  EXPECT_EQ(kv.Execute(Command(pb::OP_UNSPECIFIED, "k", "w")).status().code(),
            absl::StatusCode::kInvalidArgument);
  const rsm::ApplyContext context{.index = 7};
  absl::StatusOr<std::string> garbage = kv.Apply("\xff\xff\xff", context);
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(garbage.status().message().find("entry 7"), absl::string_view::npos)
      << garbage.status();
  EXPECT_EQ(KeyCount(kv), 1);
  EXPECT_EQ(kv.Get("k").value(), "v");
}

TEST(KvStateMachine, ApplyReturnsTheSerializedResult) {
  KvStateMachine kv;
  ASSERT_TRUE(kv.Execute(Command(pb::OP_PUT, "k", "v")).ok());
  absl::StatusOr<std::string> r =
      kv.Apply(Command(pb::OP_DELETE, "k").SerializeAsString(), rsm::ApplyContext{.index = 2});
  ASSERT_TRUE(r.ok()) << r.status();
  pb::KvResult result;
  ASSERT_TRUE(result.ParseFromString(*r));
  EXPECT_TRUE(result.found());
}

// The KV result travels through the session cache: a retried Delete is
// answered found=true although executing it again would say false.
TEST(KvStateMachine, RetriedDeleteUnderASessionReturnsTheOriginalResult) {
  Replica r;
  ASSERT_TRUE(r.Write(Command(pb::OP_PUT, "k", "v"), 1, 1).ok());
  absl::StatusOr<pb::KvResult> first = r.Write(Command(pb::OP_DELETE, "k"), 2, 1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->found());
  absl::StatusOr<pb::KvResult> retry = r.Write(Command(pb::OP_DELETE, "k"), 2, 1);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_TRUE(retry->found());
}

TEST(KvStateMachine, SnapshotRestoreReproducesTheData) {
  KvStateMachine kv;
  ASSERT_TRUE(kv.Execute(Command(pb::OP_PUT, "b", "2")).ok());
  ASSERT_TRUE(kv.Execute(Command(pb::OP_APPEND, "a", "1")).ok());
  ASSERT_TRUE(kv.Execute(Command(pb::OP_PUT, "empty", "")).ok());
  std::string snapshot;
  kv.SnapshotTo(&snapshot);

  KvStateMachine restored;
  ASSERT_TRUE(restored.Execute(Command(pb::OP_PUT, "old", "gone")).ok());
  ASSERT_TRUE(restored.Restore(snapshot).ok());
  EXPECT_EQ(restored.Get("a").value(), "1");
  EXPECT_EQ(restored.Get("b").value(), "2");
  EXPECT_TRUE(restored.Get("empty").found());
  EXPECT_FALSE(restored.Get("old").found()) << "Restore kept a key it did not replace";
  EXPECT_EQ(KeyCount(restored), 3);
  EXPECT_EQ(DataBytes(restored), DataBytes(kv));
  std::string again;
  restored.SnapshotTo(&again);
  EXPECT_EQ(again, snapshot);
}

TEST(KvStateMachine, SnapshotBytesDoNotDependOnTheOrderOfWrites) {
  KvStateMachine one, two;
  for (const char* k : {"c", "a", "b"}) ASSERT_TRUE(one.Execute(Command(pb::OP_PUT, k, k)).ok());
  for (const char* k : {"b", "c", "a"}) ASSERT_TRUE(two.Execute(Command(pb::OP_PUT, k, k)).ok());
  std::string s1, s2;
  one.SnapshotTo(&s1);
  two.SnapshotTo(&s2);
  EXPECT_EQ(s1, s2);
}

TEST(KvStateMachine, SnapshotToAppendsToWhatIsThere) {
  KvStateMachine kv;
  ASSERT_TRUE(kv.Execute(Command(pb::OP_PUT, "k", "v")).ok());
  std::string alone, after_header = "header";
  kv.SnapshotTo(&alone);
  kv.SnapshotTo(&after_header);
  EXPECT_EQ(after_header, "header" + alone);
}

TEST(KvStateMachine, RestoreOfGarbageFailsAndKeepsTheData) {
  KvStateMachine kv;
  ASSERT_TRUE(kv.Execute(Command(pb::OP_PUT, "k", "v")).ok());
  EXPECT_EQ(kv.Restore("\xff\xff").code(), absl::StatusCode::kInvalidArgument);
  pb::KvSnapshot dup;
  for (int i = 0; i < 2; ++i) {
    pb::KvPair* pair = dup.add_data();
    pair->set_key("x");
    pair->set_value("1");
  }
  EXPECT_EQ(kv.Restore(dup.SerializeAsString()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.Get("k").value(), "v");
  EXPECT_FALSE(kv.Get("x").found());
  EXPECT_EQ(KeyCount(kv), 1);
  EXPECT_EQ(DataBytes(kv), 2);
}

TEST(KvStateMachine, ReplicasApplyingTheSameLogHaveIdenticalSnapshots) {
  // Seven clients' Puts, Appends and Deletes on eleven keys as SessionCommand
  // entries, with duplicated proposals, leader no-ops and sessionless writes.
  std::vector<std::string> log;
  for (int i = 0; i < 200; ++i) {
    rsm::pb::SessionRef ref;
    ref.set_client_id(1 + i % 7);
    ref.set_created_unix_micros(1);
    ref.set_sequence(1 + i / 7);
    const pb::OpType op = i % 5 == 0 ? pb::OP_DELETE : i % 3 == 0 ? pb::OP_PUT : pb::OP_APPEND;
    const std::string cmd =
        Command(op, absl::StrCat("key", i % 11), absl::StrCat(i, ";")).SerializeAsString();
    log.push_back(rsm::EncodeCommand(i % 23 == 0 ? nullptr : &ref, cmd, 1000 * i));
    if (i % 13 == 0) log.push_back(log.back());  // a duplicated proposal
    if (i % 17 == 0) log.push_back("");          // a leader's no-op
  }
  Replica one, two;
  for (const std::string& entry : log) {
    absl::StatusOr<std::string> r1 = one.Apply(entry);
    absl::StatusOr<std::string> r2 = two.Apply(entry);
    ASSERT_EQ(r1.status(), r2.status());
    if (r1.ok()) {
      EXPECT_EQ(*r1, *r2);
    }
  }
  EXPECT_GT(KeyCount(one.kv()), 0);
  EXPECT_EQ(one.sm().Snapshot(), two.sm().Snapshot());

  // A replica that restores a mid-log snapshot and replays the rest converges too.
  Replica prefix, three;
  for (size_t i = 0; i < log.size() / 2; ++i) (void)prefix.Apply(log[i]);
  ASSERT_TRUE(three.sm().Restore(prefix.sm().Snapshot()).ok());
  for (size_t i = log.size() / 2; i < log.size(); ++i) (void)three.Apply(log[i]);
  EXPECT_EQ(three.sm().Snapshot(), one.sm().Snapshot());
  EXPECT_EQ(DataBytes(three.kv()), DataBytes(one.kv()));
}

}  // namespace
}  // namespace ds::kv
