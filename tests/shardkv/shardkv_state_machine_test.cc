// The sharded KV state machine alone (shardkv/shardkv_state_machine.h), with
// no process and no network: configuration changes one number at a time, the
// per-shard states (serving, pulling, handing-off, gc-pending, not-owned),
// chunked installs, garbage collection, Pull, snapshots, view(), the key hash,
// and exactly-once across a migration through two rsm::SessionStateMachines.
// Migrations are driven by hand the way shardkv/driver.cc drives them: the new
// owner pulls the old owner's chunks and proposes InstallChunk... InstallDone,
// the old owner deletes its copy (DeleteShardCommand), the new owner records
// it (HandoffDone).
#include "shardkv/shardkv_state_machine.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "gtest/gtest.h"
#include "proto/kv.pb.h"
#include "proto/shardkv.pb.h"
#include "raft/rsm/disk_state.h"
#include "raft/rsm/session_state_machine.h"
#include "raft/rsm/session_table.h"
#include "shardkv/key_shard.h"
#include "tests/common/temp_dir.h"

namespace ds::shardkv {
namespace {

using Owners = std::vector<uint64_t>;  // shard -> gid

constexpr uint32_t kShards = 10;
// The logical clock's start and the clients' session creation time, in
// microseconds since the epoch.
constexpr int64_t kT0 = 1'700'000'000'000'000;

// 1 owns shards 0-4 and 2 owns 5-9 (configuration 1, both from gid 0).
Owners Split() { return {1, 1, 1, 1, 1, 2, 2, 2, 2, 2}; }
Owners AllTo(uint64_t gid) { return Owners(kShards, gid); }
Owners Moved(Owners owners, uint32_t shard, uint64_t gid) {
  owners[shard] = gid;
  return owners;
}

// The i-th key (in a fixed enumeration) that falls into `shard`.
std::string KeyIn(uint32_t shard, int i = 0) {
  for (int n = 0;; ++n) {
    std::string key = absl::StrCat("k", n);
    if (KeyToShard(key, kShards) == shard && i-- == 0) return key;
  }
}

pb::ShardKvCommand Kv(kv::pb::OpType op, const std::string& key, const std::string& value = "") {
  pb::ShardKvCommand cmd;
  cmd.mutable_kv()->set_op(op);
  cmd.mutable_kv()->set_key(key);
  cmd.mutable_kv()->set_value(value);
  return cmd;
}
pb::ShardKvCommand Put(const std::string& key, const std::string& value) {
  return Kv(kv::pb::OP_PUT, key, value);
}
pb::ShardKvCommand Append(const std::string& key, const std::string& value) {
  return Kv(kv::pb::OP_APPEND, key, value);
}

pb::ShardKvCommand ConfigCmd(uint64_t num, const Owners& owners) {
  pb::ShardKvCommand cmd;
  ctrl::pb::Config* config = cmd.mutable_config()->mutable_config();
  config->set_num(num);
  for (uint64_t gid : owners) config->add_shards(gid);
  return cmd;
}

pb::ShardKvCommand ChunkCmd(uint64_t num, uint32_t shard, uint64_t chunk,
                            const std::vector<std::pair<std::string, std::string>>& pairs) {
  pb::ShardKvCommand cmd;
  pb::InstallChunk* c = cmd.mutable_install_chunk();
  c->set_config_num(num);
  c->set_shard(shard);
  c->set_chunk(chunk);
  for (const auto& [key, value] : pairs) {
    kv::pb::KvPair* p = c->add_data();
    p->set_key(key);
    p->set_value(value);
  }
  return cmd;
}

pb::ShardKvCommand DoneCmd(uint64_t num, uint32_t shard, uint64_t chunks,
                           const rsm::pb::SessionTableState& sessions = {}) {
  pb::ShardKvCommand cmd;
  cmd.mutable_install_done()->set_config_num(num);
  cmd.mutable_install_done()->set_shard(shard);
  cmd.mutable_install_done()->set_chunks(chunks);
  *cmd.mutable_install_done()->mutable_sessions() = sessions;
  return cmd;
}

pb::ShardKvCommand DeleteCmd(uint64_t num, uint32_t shard) {
  pb::ShardKvCommand cmd;
  cmd.mutable_delete_shard()->set_config_num(num);
  cmd.mutable_delete_shard()->set_shard(shard);
  return cmd;
}

pb::ShardKvCommand HandoffCmd(uint64_t num, uint32_t shard) {
  pb::ShardKvCommand cmd;
  cmd.mutable_handoff_done()->set_config_num(num);
  cmd.mutable_handoff_done()->set_shard(shard);
  return cmd;
}

pb::PullShardRequest PullReq(uint64_t num, uint32_t shard, uint64_t max_bytes = 0,
                             bool from_start = true, const std::string& after_key = "") {
  pb::PullShardRequest req;
  req.set_config_num(num);
  req.set_shard(shard);
  req.set_from_start(from_start);
  req.set_after_key(after_key);
  req.set_max_bytes(max_bytes);
  return req;
}

// What the new owner's driver proposes for `shard` at configuration `num`:
// one InstallChunk per Pull of the old owner (at most about `max_bytes`
// each), then InstallDone with the sessions of the last Pull.
std::vector<pb::ShardKvCommand> PullCommands(const ShardKvStateMachine& from,
                                             const rsm::SessionTable& sessions, uint64_t num,
                                             uint32_t shard, uint64_t max_bytes = 0) {
  std::vector<pb::ShardKvCommand> out;
  std::string after;
  for (uint64_t chunk = 0; chunk < 100000; ++chunk) {
    absl::StatusOr<pb::PullShardResponse> r =
        from.Pull(PullReq(num, shard, max_bytes, chunk == 0, after), sessions);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) break;
    pb::ShardKvCommand cmd = ChunkCmd(num, shard, chunk, {});
    *cmd.mutable_install_chunk()->mutable_data() = r->data();
    if (r->data_size() > 0) after = r->data(r->data_size() - 1).key();
    out.push_back(std::move(cmd));
    if (r->done()) {
      out.push_back(DoneCmd(num, shard, chunk + 1, r->sessions()));
      break;
    }
  }
  return out;
}

// "value", "<missing>", or the error code's name (FAILED_PRECONDITION, ...).
std::string Show(const absl::StatusOr<kv::pb::KvResult>& r) {
  if (!r.ok()) return absl::StatusCodeToString(r.status().code());
  return r->found() ? r->value() : "<missing>";
}

// One group's state machine applied to directly, as the session layer would
// (its own session table in the context, one index per command).
class Group {
 public:
  explicit Group(uint64_t gid) : sm_(gid) {}

  absl::StatusOr<std::string> Apply(const pb::ShardKvCommand& cmd) {
    return ApplyBytes(cmd.SerializeAsString());
  }
  absl::StatusOr<std::string> ApplyBytes(const std::string& bytes) {
    rsm::ApplyContext context;
    context.index = ++index_;
    context.clock_unix_micros = kT0 + static_cast<int64_t>(index_);
    context.sessions = &sessions_;
    return sm_.Apply(bytes, context);
  }
  // A command that must succeed (internal commands succeed even when ignored).
  void Do(const pb::ShardKvCommand& cmd) {
    absl::StatusOr<std::string> r = Apply(cmd);
    EXPECT_TRUE(r.ok()) << r.status() << " for " << cmd.ShortDebugString();
  }
  void DoAll(const std::vector<pb::ShardKvCommand>& cmds) {
    for (const pb::ShardKvCommand& cmd : cmds) Do(cmd);
  }
  absl::Status Write(const pb::ShardKvCommand& cmd) { return Apply(cmd).status(); }
  std::string Read(const std::string& key) const { return Show(sm_.Get(key)); }

  pb::ShardState State(uint32_t shard) const {
    ShardKvStateMachine::View v = sm_.view();
    return shard < v.states.size() ? v.states[shard] : pb::SHARD_NOT_OWNED;
  }
  uint64_t Keys(uint32_t shard) const { return sm_.view().keys.at(shard); }
  uint64_t num() const { return sm_.view().current.num(); }
  bool settled() const { return sm_.view().settled(); }
  std::string Snapshot() const {
    std::string out;
    sm_.SnapshotTo(&out);
    return out;
  }
  absl::StatusOr<pb::PullShardResponse> Pull(const pb::PullShardRequest& req) const {
    return sm_.Pull(req, sessions_);
  }
  std::vector<pb::ShardKvCommand> PullFor(uint64_t num, uint32_t shard,
                                          uint64_t max_bytes = 0) const {
    return PullCommands(sm_, sessions_, num, shard, max_bytes);
  }

  ShardKvStateMachine& sm() { return sm_; }
  rsm::SessionTable& sessions() { return sessions_; }

 private:
  ShardKvStateMachine sm_;
  rsm::SessionTable sessions_;
  uint64_t index_ = 0;
};

// Groups 1 and 2 at configuration 1 (Split()), then configuration 2 moves
// shard kMoved from 1 to 2; each shard of 1 holds two keys.
constexpr uint32_t kMoved = 3;
struct TwoGroups {
  Group a{1};
  Group b{2};
  TwoGroups() {
    a.Do(ConfigCmd(1, Split()));
    b.Do(ConfigCmd(1, Split()));
    for (uint32_t s = 0; s < 5; ++s) {
      for (int i = 0; i < 2; ++i)
        EXPECT_TRUE(a.Write(Put(KeyIn(s, i), absl::StrCat("v", s, i))).ok());
    }
    a.Do(ConfigCmd(2, Moved(Split(), kMoved, 2)));
    b.Do(ConfigCmd(2, Moved(Split(), kMoved, 2)));
  }
};

// ---------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------

TEST(ShardKvConfig, BeforeAnyConfigurationEveryKeyIsWrongGroup) {
  Group g(1);
  EXPECT_EQ(g.num(), 0u);
  EXPECT_TRUE(g.sm().view().states.empty());
  EXPECT_TRUE(g.settled());
  EXPECT_EQ(g.Write(Put("a", "1")).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(g.Read("a"), "FAILED_PRECONDITION");
}

TEST(ShardKvConfig, FirstConfigurationServesShardsGainedFromGidZeroAtOnceAndEmpty) {
  Group g(1);
  g.Do(ConfigCmd(1, Split()));
  EXPECT_EQ(g.num(), 1u);
  for (uint32_t s = 0; s < kShards; ++s) {
    EXPECT_EQ(g.State(s), s < 5 ? pb::SHARD_SERVING : pb::SHARD_NOT_OWNED) << "shard " << s;
    EXPECT_EQ(g.Keys(s), 0u) << "shard " << s;
  }
  EXPECT_TRUE(g.settled());
  EXPECT_EQ(g.Read(KeyIn(0)), "<missing>");
  EXPECT_TRUE(g.Write(Put(KeyIn(0), "x")).ok());
  EXPECT_EQ(g.Read(KeyIn(0)), "x");
}

TEST(ShardKvConfig, KeysOfShardsNotOwnedAreWrongGroupAndChangeNothing) {
  Group g(1);
  g.Do(ConfigCmd(1, Split()));
  const std::string before = g.Snapshot();
  for (kv::pb::OpType op : {kv::pb::OP_GET, kv::pb::OP_PUT, kv::pb::OP_APPEND, kv::pb::OP_DELETE}) {
    absl::Status st = g.Write(Kv(op, KeyIn(7), "x"));
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
    EXPECT_NE(st.message().find("wrong group"), std::string::npos) << st;
  }
  EXPECT_EQ(g.Read(KeyIn(7)), "FAILED_PRECONDITION");
  EXPECT_EQ(g.Snapshot(), before);
}

TEST(ShardKvConfig, MalformedCommandsAreInvalidArgument) {
  Group g(1);
  g.Do(ConfigCmd(1, Split()));
  const std::string before = g.Snapshot();
  EXPECT_EQ(g.ApplyBytes("\xff\xff\xff").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(g.Apply(pb::ShardKvCommand()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(g.Write(Kv(kv::pb::OP_UNSPECIFIED, KeyIn(0), "x")).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(g.Snapshot(), before);
}

TEST(ShardKvConfig, OnlyTheNextNumberIsApplied) {
  Group g(1);
  g.Do(ConfigCmd(2, Split()));  // early
  EXPECT_EQ(g.num(), 0u);
  g.Do(ConfigCmd(1, Split()));
  ASSERT_EQ(g.num(), 1u);
  ASSERT_TRUE(g.Write(Put(KeyIn(0), "x")).ok());
  const std::string at1 = g.Snapshot();
  g.Do(ConfigCmd(1, AllTo(2)));  // a duplicate (even with other contents)
  g.Do(ConfigCmd(0, AllTo(2)));  // stale
  g.Do(ConfigCmd(3, AllTo(2)));  // early
  EXPECT_EQ(g.Snapshot(), at1);
  EXPECT_EQ(g.Read(KeyIn(0)), "x");
  g.Do(ConfigCmd(2, Split()));
  EXPECT_EQ(g.num(), 2u);
  EXPECT_EQ(g.Read(KeyIn(0)), "x");
  EXPECT_EQ(g.sm().view().previous.num(), 1u);
}

TEST(ShardKvConfig, NextConfigurationWaitsUntilEveryShardIsSettled) {
  TwoGroups t;  // at 2: a hands off kMoved, b pulls it
  ASSERT_EQ(t.a.State(kMoved), pb::SHARD_HANDING_OFF);
  ASSERT_EQ(t.b.State(kMoved), pb::SHARD_PULLING);
  EXPECT_FALSE(t.a.settled());
  EXPECT_FALSE(t.b.settled());
  const std::string a2 = t.a.Snapshot();
  const std::string b2 = t.b.Snapshot();
  t.a.Do(ConfigCmd(3, Split()));
  t.b.Do(ConfigCmd(3, Split()));
  EXPECT_EQ(t.a.Snapshot(), a2);
  EXPECT_EQ(t.b.Snapshot(), b2);
}

TEST(ShardKvConfig, MismatchedShardCountIsRefused) {
  Group g(1);
  EXPECT_EQ(g.Apply(ConfigCmd(1, {})).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(g.num(), 0u);
  g.Do(ConfigCmd(1, Split()));
  const std::string at1 = g.Snapshot();
  EXPECT_EQ(g.Apply(ConfigCmd(2, {1, 1, 1})).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(g.Apply(ConfigCmd(2, Owners(kShards + 1, 1))).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(g.Snapshot(), at1);
  EXPECT_EQ(g.num(), 1u);
}

TEST(ShardKvConfig, KvCommandsAnswerWithTheirKvResult) {
  Group g(1);
  g.Do(ConfigCmd(1, Split()));
  auto result = [&](const pb::ShardKvCommand& cmd) {
    absl::StatusOr<std::string> r = g.Apply(cmd);
    EXPECT_TRUE(r.ok()) << r.status();
    kv::pb::KvResult out;
    EXPECT_TRUE(r.ok() && out.ParseFromString(*r));
    return out.ShortDebugString();
  };
  EXPECT_EQ(result(Put(KeyIn(1), "v")), "");
  EXPECT_EQ(result(Append(KeyIn(1), "w")), "");
  EXPECT_EQ(result(Kv(kv::pb::OP_GET, KeyIn(1))), R"(found: true value: "vw")");
  EXPECT_EQ(result(Kv(kv::pb::OP_DELETE, KeyIn(1))), "found: true");
  EXPECT_EQ(result(Kv(kv::pb::OP_DELETE, KeyIn(1))), "");
}

// ---------------------------------------------------------------------------
// Lost and gained shards
// ---------------------------------------------------------------------------

TEST(ShardKvMigration, LostShardIsHandedOffFrozenWithItsData) {
  TwoGroups t;
  EXPECT_EQ(t.a.State(kMoved), pb::SHARD_HANDING_OFF);
  EXPECT_EQ(t.a.Keys(kMoved), 2u);
  EXPECT_EQ(t.a.Write(Put(KeyIn(kMoved), "new")).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(t.a.Write(Append(KeyIn(kMoved, 5), "new")).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(t.a.Read(KeyIn(kMoved)), "FAILED_PRECONDITION");
  absl::StatusOr<pb::PullShardResponse> r = t.a.Pull(PullReq(2, kMoved));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->data_size(), 2);
  EXPECT_TRUE(r->done());
  std::set<std::string> keys = {r->data(0).key(), r->data(1).key()};
  EXPECT_EQ(keys, (std::set<std::string>{KeyIn(kMoved, 0), KeyIn(kMoved, 1)}));
}

TEST(ShardKvMigration, ShardGainedFromAnotherGroupIsRefusedUntilInstalled) {
  TwoGroups t;
  EXPECT_EQ(t.b.State(kMoved), pb::SHARD_PULLING);
  EXPECT_EQ(t.b.Read(KeyIn(kMoved)), "FAILED_PRECONDITION");
  EXPECT_EQ(t.b.Write(Put(KeyIn(kMoved), "x")).code(), absl::StatusCode::kFailedPrecondition);
  std::vector<pb::ShardKvCommand> cmds = t.a.PullFor(2, kMoved);
  t.b.DoAll(std::vector<pb::ShardKvCommand>(cmds.begin(), cmds.end() - 1));  // chunks only
  EXPECT_EQ(t.b.State(kMoved), pb::SHARD_PULLING);
  EXPECT_EQ(t.b.Read(KeyIn(kMoved)), "FAILED_PRECONDITION") << "staged data is not served";
  t.b.Do(cmds.back());
  EXPECT_EQ(t.b.State(kMoved), pb::SHARD_GC_PENDING);
  EXPECT_EQ(t.b.Read(KeyIn(kMoved)), absl::StrCat("v", kMoved, 0));
  EXPECT_TRUE(t.b.Write(Append(KeyIn(kMoved), "+")).ok()) << "gc-pending serves writes";
  EXPECT_EQ(t.b.Read(KeyIn(kMoved)), absl::StrCat("v", kMoved, 0, "+"));
}

TEST(ShardKvMigration, InstalledShardHoldsExactlyTheOldOwnersData) {
  Group a(1), b(2);
  a.Do(ConfigCmd(1, AllTo(1)));
  b.Do(ConfigCmd(1, AllTo(1)));
  std::vector<std::string> keys;
  for (int i = 0; i < 40; ++i) {
    keys.push_back(KeyIn(kMoved, i));
    ASSERT_TRUE(a.Write(Put(keys.back(), std::string(i % 9, 'a' + i % 26))).ok());
  }
  ASSERT_TRUE(a.Write(Kv(kv::pb::OP_DELETE, keys[7])).ok());
  ASSERT_TRUE(a.Write(Append(keys[8], "-appended")).ok());
  a.Do(ConfigCmd(2, Moved(AllTo(1), kMoved, 2)));
  b.Do(ConfigCmd(2, Moved(AllTo(1), kMoved, 2)));
  std::vector<pb::ShardKvCommand> cmds = a.PullFor(2, kMoved, /*max_bytes=*/24);
  ASSERT_GT(cmds.size(), 5u) << "the test wants several chunks";
  b.DoAll(cmds);
  ASSERT_EQ(b.State(kMoved), pb::SHARD_GC_PENDING);
  EXPECT_EQ(b.Keys(kMoved), 39u);
  EXPECT_EQ(b.Keys(kMoved), a.Keys(kMoved));
  EXPECT_EQ(b.Read(keys[7]), "<missing>") << "deleted at the old owner";
  // Compare with what the old owner holds, pair by pair.
  absl::StatusOr<pb::PullShardResponse> all = a.Pull(PullReq(2, kMoved));
  ASSERT_TRUE(all.ok());
  for (const kv::pb::KvPair& p : all->data()) EXPECT_EQ(b.Read(p.key()), p.value()) << p.key();
  EXPECT_EQ(b.Read(keys[8]), std::string(8, 'a' + 8) + "-appended");
  // The other shards of b are untouched: not owned, nothing there.
  for (uint32_t s = 0; s < kShards; ++s) {
    if (s != kMoved) {
      EXPECT_EQ(b.Keys(s), 0u) << s;
    }
  }
}

// ---------------------------------------------------------------------------
// InstallChunk / InstallDone
// ---------------------------------------------------------------------------

TEST(ShardKvInstall, OnlyTheNextChunkIsStagedDuplicatesAndGapsAreIgnored) {
  TwoGroups t;
  Group& b = t.b;
  auto staged = [&] { return b.sm().view().staged_chunks.at(kMoved); };
  b.Do(ChunkCmd(2, kMoved, 1, {{"k1", "x"}}));  // a gap: chunk 0 is missing
  EXPECT_EQ(staged(), 0u);
  b.Do(ChunkCmd(2, kMoved, 0, {{"a", "1"}}));
  EXPECT_EQ(staged(), 1u);
  b.Do(ChunkCmd(2, kMoved, 1, {{"b", "2"}}));
  EXPECT_EQ(staged(), 2u);
  b.Do(ChunkCmd(2, kMoved, 1, {{"zz-duplicate", "dup"}}));  // a duplicate of 1
  b.Do(ChunkCmd(2, kMoved, 3, {{"zz-gap", "gap"}}));        // a gap: 2 is missing
  EXPECT_EQ(staged(), 2u);
  EXPECT_EQ(b.sm().view().last_staged_key.at(kMoved), "b");
  b.Do(ChunkCmd(2, kMoved, 2, {{"c", "3"}}));
  EXPECT_EQ(staged(), 3u);
  b.Do(DoneCmd(2, kMoved, 3));
  EXPECT_EQ(b.Keys(kMoved), 3u) << "only chunks 0, 1, 2 as first staged";
}

TEST(ShardKvInstall, ChunkZeroRestartsStaging) {
  TwoGroups t;
  Group& b = t.b;
  b.Do(ChunkCmd(2, kMoved, 0, {{"a", "old"}}));
  b.Do(ChunkCmd(2, kMoved, 1, {{"b", "old"}}));
  b.Do(ChunkCmd(2, kMoved, 0, {{"a", "new"}}));  // a new leader pulling from the start
  EXPECT_EQ(b.sm().view().staged_chunks.at(kMoved), 1u);
  EXPECT_EQ(b.sm().view().last_staged_key.at(kMoved), "a");
  b.Do(DoneCmd(2, kMoved, 1));
  ASSERT_EQ(b.State(kMoved), pb::SHARD_GC_PENDING);
  EXPECT_EQ(b.Keys(kMoved), 1u) << "the first attempt's chunk 1 was dropped";
  // "a" need not hash to kMoved (staged data is installed as sent): read the
  // shard's contents from the snapshot.
  pb::ShardKvSnapshot snap;
  ASSERT_TRUE(snap.ParseFromString(b.Snapshot()));
  ASSERT_EQ(snap.shards(kMoved).data_size(), 1);
  EXPECT_EQ(snap.shards(kMoved).data(0).key(), "a");
  EXPECT_EQ(snap.shards(kMoved).data(0).value(), "new");
}

TEST(ShardKvInstall, ChunksAndDoneOfAnotherConfigurationOrShardAreIgnored) {
  TwoGroups t;
  Group& b = t.b;
  const std::string before = b.Snapshot();
  b.Do(ChunkCmd(1, kMoved, 0, {{"a", "1"}}));   // stale configuration
  b.Do(ChunkCmd(3, kMoved, 0, {{"a", "1"}}));   // future configuration
  b.Do(ChunkCmd(2, 7, 0, {{"a", "1"}}));        // a shard b serves
  b.Do(ChunkCmd(2, 0, 0, {{"a", "1"}}));        // a shard b does not own
  b.Do(ChunkCmd(2, kShards, 0, {{"a", "1"}}));  // no such shard
  b.Do(DoneCmd(1, kMoved, 0));
  b.Do(DoneCmd(3, kMoved, 0));
  b.Do(DoneCmd(2, 7, 0));
  b.Do(DoneCmd(2, kShards, 0));
  b.Do(HandoffCmd(2, kShards));
  b.Do(DeleteCmd(2, kShards));
  EXPECT_EQ(b.Snapshot(), before);
  EXPECT_EQ(b.State(kMoved), pb::SHARD_PULLING);
  EXPECT_EQ(b.State(7), pb::SHARD_SERVING);
}

TEST(ShardKvInstall, DoneOnlyWhenEveryChunkIsStaged) {
  TwoGroups t;
  Group& b = t.b;
  b.Do(ChunkCmd(2, kMoved, 0, {{KeyIn(kMoved, 0), "0"}}));
  b.Do(ChunkCmd(2, kMoved, 1, {{KeyIn(kMoved, 1), "1"}}));
  b.Do(DoneCmd(2, kMoved, 1));
  b.Do(DoneCmd(2, kMoved, 3));
  b.Do(DoneCmd(2, kMoved, 0));
  EXPECT_EQ(b.State(kMoved), pb::SHARD_PULLING);
  b.Do(DoneCmd(2, kMoved, 2));
  EXPECT_EQ(b.State(kMoved), pb::SHARD_GC_PENDING);
  EXPECT_EQ(b.Read(KeyIn(kMoved, 1)), "1");
  // A replayed install (an old leader's proposals) changes nothing once the
  // shard serves: later writes are kept.
  ASSERT_TRUE(b.Write(Put(KeyIn(kMoved, 1), "written")).ok());
  b.Do(ChunkCmd(2, kMoved, 0, {{KeyIn(kMoved, 1), "replayed"}}));
  b.Do(DoneCmd(2, kMoved, 1));
  EXPECT_EQ(b.Read(KeyIn(kMoved, 1)), "written");
  EXPECT_EQ(b.Keys(kMoved), 2u);
}

TEST(ShardKvInstall, AnEmptyShardInstallsFromOneEmptyChunk) {
  Group a(1), b(2);
  a.Do(ConfigCmd(1, AllTo(1)));
  b.Do(ConfigCmd(1, AllTo(1)));
  a.Do(ConfigCmd(2, Moved(AllTo(1), kMoved, 2)));
  b.Do(ConfigCmd(2, Moved(AllTo(1), kMoved, 2)));
  std::vector<pb::ShardKvCommand> cmds = a.PullFor(2, kMoved);
  ASSERT_EQ(cmds.size(), 2u);
  b.DoAll(cmds);
  EXPECT_EQ(b.State(kMoved), pb::SHARD_GC_PENDING);
  EXPECT_EQ(b.Keys(kMoved), 0u);
  EXPECT_EQ(b.Read(KeyIn(kMoved)), "<missing>");
}

// ---------------------------------------------------------------------------
// Garbage collection and finishing a change
// ---------------------------------------------------------------------------

TEST(ShardKvGc, DeleteOnlyAHandedOffShardAtItsConfiguration) {
  TwoGroups t;
  Group& a = t.a;
  const std::string before = a.Snapshot();
  a.Do(DeleteCmd(1, kMoved));  // stale
  a.Do(DeleteCmd(3, kMoved));  // future
  a.Do(DeleteCmd(2, 0));       // serving: never deleted
  a.Do(DeleteCmd(2, 7));       // not owned
  EXPECT_EQ(a.Snapshot(), before);
  a.Do(DeleteCmd(2, kMoved));
  EXPECT_EQ(a.State(kMoved), pb::SHARD_NOT_OWNED);
  EXPECT_EQ(a.Keys(kMoved), 0u);
  pb::ShardKvSnapshot snap;
  ASSERT_TRUE(snap.ParseFromString(a.Snapshot()));
  EXPECT_EQ(snap.shards(kMoved).data_size(), 0) << "no data kept";
  EXPECT_EQ(a.Read(KeyIn(kMoved)), "FAILED_PRECONDITION");
  EXPECT_EQ(a.Pull(PullReq(2, kMoved)).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(a.settled());
  const std::string deleted = a.Snapshot();
  a.Do(DeleteCmd(2, kMoved));  // a retry
  EXPECT_EQ(a.Snapshot(), deleted);
  EXPECT_EQ(a.Read(KeyIn(0)), "v00") << "other shards untouched";
}

TEST(ShardKvGc, HandoffDoneMovesGcPendingToServing) {
  TwoGroups t;
  Group& b = t.b;
  b.Do(HandoffCmd(2, kMoved));  // still pulling: nothing to confirm
  EXPECT_EQ(b.State(kMoved), pb::SHARD_PULLING);
  b.DoAll(t.a.PullFor(2, kMoved));
  ASSERT_EQ(b.State(kMoved), pb::SHARD_GC_PENDING);
  b.Do(HandoffCmd(1, kMoved));
  b.Do(HandoffCmd(3, kMoved));
  b.Do(HandoffCmd(2, 7));
  EXPECT_EQ(b.State(kMoved), pb::SHARD_GC_PENDING);
  EXPECT_EQ(b.State(7), pb::SHARD_SERVING);
  EXPECT_FALSE(b.settled());
  b.Do(HandoffCmd(2, kMoved));
  EXPECT_EQ(b.State(kMoved), pb::SHARD_SERVING);
  EXPECT_TRUE(b.settled());
  EXPECT_EQ(b.Read(KeyIn(kMoved)), absl::StrCat("v", kMoved, 0));
}

TEST(ShardKvGc, GroupsMoveOnOnlyAfterBothSidesFinished) {
  TwoGroups t;
  const pb::ShardKvCommand next = ConfigCmd(3, Split());  // kMoved goes back to 1
  auto try_next = [&](Group& g) {
    g.Do(next);
    return g.num();
  };
  EXPECT_EQ(try_next(t.a), 2u);
  EXPECT_EQ(try_next(t.b), 2u);
  t.b.DoAll(t.a.PullFor(2, kMoved));  // installed at b
  EXPECT_EQ(try_next(t.a), 2u) << "a still holds its copy";
  EXPECT_EQ(try_next(t.b), 2u) << "b has not heard that a deleted its copy";
  t.a.Do(DeleteCmd(2, kMoved));
  EXPECT_EQ(try_next(t.a), 3u);
  EXPECT_EQ(try_next(t.b), 2u);
  ASSERT_TRUE(t.b.Write(Append(KeyIn(kMoved), "@b")).ok());
  t.b.Do(HandoffCmd(2, kMoved));
  EXPECT_EQ(try_next(t.b), 3u);
  // And back: a pulls b's copy (with b's writes), not its own deleted one.
  EXPECT_EQ(t.a.State(kMoved), pb::SHARD_PULLING);
  EXPECT_EQ(t.b.State(kMoved), pb::SHARD_HANDING_OFF);
  EXPECT_EQ(t.a.Pull(PullReq(3, kMoved)).status().code(), absl::StatusCode::kFailedPrecondition);
  t.a.DoAll(t.b.PullFor(3, kMoved));
  EXPECT_EQ(t.a.Read(KeyIn(kMoved)), absl::StrCat("v", kMoved, 0, "@b"));
}

// ---------------------------------------------------------------------------
// Pull
// ---------------------------------------------------------------------------

TEST(ShardKvPull, UnavailableBeforeTheGroupAppliedTheConfiguration) {
  Group a(1);
  a.Do(ConfigCmd(1, AllTo(1)));
  absl::StatusOr<pb::PullShardResponse> r = a.Pull(PullReq(2, kMoved));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_EQ(Group(1).Pull(PullReq(1, kMoved)).status().code(), absl::StatusCode::kUnavailable);
}

TEST(ShardKvPull, RefusedForShardsNotHandedOffAtThatConfiguration) {
  TwoGroups t;
  auto code = [&](Group& g, uint64_t num, uint32_t shard) {
    return g.Pull(PullReq(num, shard)).status().code();
  };
  EXPECT_EQ(code(t.a, 2, kMoved), absl::StatusCode::kOk);
  EXPECT_EQ(code(t.a, 2, 0), absl::StatusCode::kFailedPrecondition);        // serving
  EXPECT_EQ(code(t.a, 2, 7), absl::StatusCode::kFailedPrecondition);        // never a's
  EXPECT_EQ(code(t.a, 2, kShards), absl::StatusCode::kFailedPrecondition);  // no such shard
  EXPECT_EQ(code(t.a, 1, kMoved), absl::StatusCode::kFailedPrecondition);   // older configuration
  EXPECT_EQ(code(t.b, 2, kMoved), absl::StatusCode::kFailedPrecondition);   // b is pulling it
  t.a.Do(DeleteCmd(2, kMoved));
  EXPECT_EQ(code(t.a, 2, kMoved), absl::StatusCode::kFailedPrecondition);  // deleted
}

TEST(ShardKvPull, ChunksCoverEveryKeyOnceInOrderAndSessionsComeWithTheLast) {
  Group a(1);
  a.Do(ConfigCmd(1, AllTo(1)));
  std::vector<std::string> keys;
  for (int i = 0; i < 50; ++i) {
    keys.push_back(KeyIn(kMoved, i));
    ASSERT_TRUE(a.Write(Put(keys.back(), std::string(i % 11, 'v'))).ok());
    ASSERT_TRUE(a.Write(Put(KeyIn(kMoved + 1, i), "other shard")).ok());
  }
  std::sort(keys.begin(), keys.end());
  a.sessions().Open(rsm::MakeSessionRef(42, kT0, 1), kT0);
  a.Do(ConfigCmd(2, Moved(AllTo(1), kMoved, 2)));
  for (uint64_t max_bytes : {1ull, 7ull, 30ull, 100ull, 1000ull, 0ull}) {
    SCOPED_TRACE(absl::StrCat("max_bytes ", max_bytes));
    std::vector<std::string> got;
    std::string after;
    bool done = false;
    int chunks = 0;
    while (!done && chunks < 1000) {
      absl::StatusOr<pb::PullShardResponse> r =
          a.Pull(PullReq(2, kMoved, max_bytes, chunks == 0, after));
      ASSERT_TRUE(r.ok()) << r.status();
      ++chunks;
      ASSERT_GT(r->data_size(), 0) << "every chunk but an empty shard's holds a pair";
      uint64_t bytes = 0;
      for (const kv::pb::KvPair& p : r->data()) {
        got.push_back(p.key());
        bytes += p.key().size() + p.value().size();
      }
      if (max_bytes > 0 && r->data_size() > 1) {
        EXPECT_LE(bytes, max_bytes);
      }
      after = got.back();
      done = r->done();
      EXPECT_EQ(r->has_sessions(), done) << "sessions only with the last chunk";
      if (done) {
        ASSERT_EQ(r->sessions().sessions_size(), 1);
        EXPECT_EQ(r->sessions().sessions(0).client_id(), 42u);
      }
    }
    EXPECT_TRUE(done);
    EXPECT_EQ(got, keys) << "every key exactly once, in order";
    if (max_bytes == 1) {
      EXPECT_EQ(chunks, 50) << "one pair per chunk";
    }
    if (max_bytes == 0 || max_bytes == 1000) {
      EXPECT_EQ(chunks, 1);
    }
    // After the last key there is nothing left, and done.
    absl::StatusOr<pb::PullShardResponse> tail =
        a.Pull(PullReq(2, kMoved, max_bytes, false, keys.back()));
    ASSERT_TRUE(tail.ok());
    EXPECT_EQ(tail->data_size(), 0);
    EXPECT_TRUE(tail->done());
  }
}

// ---------------------------------------------------------------------------
// Challenge 2: shards a change does not touch keep serving
// ---------------------------------------------------------------------------

TEST(ShardKvChallenge2, UnaffectedShardsKeepTheirDataAndAnswerThroughout) {
  Group a(1), b(2);
  a.Do(ConfigCmd(1, AllTo(1)));
  b.Do(ConfigCmd(1, AllTo(1)));
  for (uint32_t s = 0; s < kShards; ++s) ASSERT_TRUE(a.Write(Put(KeyIn(s), "1")).ok());
  // Shards 0-4 move to b; 5-9 stay.
  const Owners to2 = {2, 2, 2, 2, 2, 1, 1, 1, 1, 1};
  a.Do(ConfigCmd(2, to2));
  b.Do(ConfigCmd(2, to2));
  auto a_answers_5_to_9 = [&](const std::string& step) {
    for (uint32_t s = 5; s < kShards; ++s) {
      ASSERT_TRUE(a.Write(Append(KeyIn(s), "+")).ok()) << step << " shard " << s;
      EXPECT_EQ(a.State(s), pb::SHARD_SERVING) << step;
    }
  };
  a_answers_5_to_9("handing off");
  // Shards arrive one at a time: each serves as soon as it is installed
  // (challenge 2 partial), the others still wait.
  for (uint32_t s = 0; s < 5; ++s) {
    b.DoAll(a.PullFor(2, s));
    EXPECT_EQ(b.Read(KeyIn(s)), "1") << s;
    ASSERT_TRUE(b.Write(Append(KeyIn(s), "b")).ok());
    if (s + 1 < 5) {
      EXPECT_EQ(b.Read(KeyIn(s + 1)), "FAILED_PRECONDITION");
    }
    a_answers_5_to_9(absl::StrCat("after installing ", s));
    a.Do(DeleteCmd(2, s));
    a_answers_5_to_9(absl::StrCat("after deleting ", s));
    b.Do(HandoffCmd(2, s));
  }
  EXPECT_TRUE(a.settled());
  EXPECT_TRUE(b.settled());
  for (uint32_t s = 0; s < 5; ++s) EXPECT_EQ(b.Read(KeyIn(s)), "1b");
  for (uint32_t s = 5; s < kShards; ++s) EXPECT_EQ(a.Read(KeyIn(s)), "1" + std::string(11, '+'));
}

// ---------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------

// Group 1 mid-migration at configuration 2: shard 0 handing off (to 2),
// shard 5 pulling from 2 with one of several chunks staged, shard 6
// installed from 2 and gc-pending; 1-4 serving.
struct MidMigration {
  Group g1{1};
  Group g2{2};
  std::vector<pb::ShardKvCommand> rest_of_5;  // what installs shard 5 from here
  MidMigration() {
    g1.Do(ConfigCmd(1, Split()));
    g2.Do(ConfigCmd(1, Split()));
    for (uint32_t s = 0; s < kShards; ++s) {
      Group& owner = s < 5 ? g1 : g2;
      for (int i = 0; i < 4; ++i)
        EXPECT_TRUE(owner.Write(Put(KeyIn(s, i), absl::StrCat(s, i))).ok());
    }
    const Owners next = {2, 1, 1, 1, 1, 1, 1, 2, 2, 2};
    g1.Do(ConfigCmd(2, next));
    g2.Do(ConfigCmd(2, next));
    g1.DoAll(g2.PullFor(2, 6));
    rest_of_5 = g2.PullFor(2, 5, /*max_bytes=*/1);
    EXPECT_EQ(rest_of_5.size(), 5u);  // 4 one-pair chunks and InstallDone
    g1.Do(rest_of_5.front());
    rest_of_5.erase(rest_of_5.begin());
  }
};

TEST(ShardKvSnapshot, RoundTripMidMigrationGivesTheSameBytesAndBehaviour) {
  MidMigration m;
  Group& g = m.g1;
  ASSERT_EQ(g.State(0), pb::SHARD_HANDING_OFF);
  ASSERT_EQ(g.State(5), pb::SHARD_PULLING);
  ASSERT_EQ(g.State(6), pb::SHARD_GC_PENDING);
  const std::string bytes = g.Snapshot();
  Group r(1);
  ASSERT_TRUE(r.sm().Restore(bytes).ok());
  EXPECT_EQ(r.Snapshot(), bytes);
  ShardKvStateMachine::View gv = g.sm().view(), rv = r.sm().view();
  EXPECT_EQ(rv.current.SerializeAsString(), gv.current.SerializeAsString());
  EXPECT_EQ(rv.previous.SerializeAsString(), gv.previous.SerializeAsString());
  EXPECT_EQ(rv.states, gv.states);
  EXPECT_EQ(rv.staged_chunks, gv.staged_chunks);
  EXPECT_EQ(rv.last_staged_key, gv.last_staged_key);
  EXPECT_EQ(rv.keys, gv.keys);
  // The same commands from here on give the same answers and the same state.
  std::vector<pb::ShardKvCommand> next = m.rest_of_5;
  next.push_back(Append(KeyIn(6), "+"));
  next.push_back(Append(KeyIn(0), "+"));  // refused: handing off
  next.push_back(DeleteCmd(2, 0));
  next.push_back(HandoffCmd(2, 5));
  next.push_back(HandoffCmd(2, 6));
  auto apply_both = [&](const std::vector<pb::ShardKvCommand>& cmds) {
    for (const pb::ShardKvCommand& cmd : cmds) {
      absl::StatusOr<std::string> x = g.Apply(cmd), y = r.Apply(cmd);
      EXPECT_EQ(x.status(), y.status()) << cmd.ShortDebugString();
      if (x.ok() && y.ok()) {
        EXPECT_EQ(*x, *y);
      }
      EXPECT_EQ(g.Snapshot(), r.Snapshot()) << "after " << cmd.ShortDebugString();
    }
    for (uint32_t s = 0; s < kShards; ++s) {
      for (int i = 0; i < 4; ++i) EXPECT_EQ(r.Read(KeyIn(s, i)), g.Read(KeyIn(s, i)));
    }
  };
  apply_both(next);
  EXPECT_TRUE(r.settled());
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(r.Read(KeyIn(5, i)), absl::StrCat(5, i)) << "the staged chunk survived the snapshot";
  }
  apply_both({ConfigCmd(3, Split()), Append(KeyIn(1), "+")});
  EXPECT_EQ(r.num(), 3u);
  EXPECT_EQ(r.Read(KeyIn(1)), "10+");
}

TEST(ShardKvSnapshot, PullAnswersTheSameAfterRestore) {
  MidMigration m;
  Group r(1);
  ASSERT_TRUE(r.sm().Restore(m.g1.Snapshot()).ok());
  absl::StatusOr<pb::PullShardResponse> x = m.g1.Pull(PullReq(2, 0)), y = r.Pull(PullReq(2, 0));
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_EQ(x->data_size(), 4);
  // The session tables are separate (the session layer's): compare the data.
  EXPECT_EQ(x->SerializeAsString(), y->SerializeAsString());
}

TEST(ShardKvSnapshot, FreshStateRoundTrips) {
  Group g(3), r(3);
  ASSERT_TRUE(r.sm().Restore(g.Snapshot()).ok());
  EXPECT_EQ(r.Snapshot(), g.Snapshot());
  EXPECT_EQ(r.num(), 0u);
}

TEST(ShardKvSnapshot, SnapshotOfAnotherGroupOrGarbageIsRefusedAndChangesNothing) {
  MidMigration m;
  Group& g = m.g1;
  const std::string before = g.Snapshot();
  const ShardKvStateMachine::View view_before = g.sm().view();
  auto refused = [&](const std::string& bytes, const std::string& what) {
    absl::Status st = g.sm().Restore(bytes);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << what << ": " << st;
    EXPECT_EQ(g.Snapshot(), before) << what;
    EXPECT_EQ(g.sm().view().states, view_before.states) << what;
    EXPECT_EQ(g.sm().view().keys, view_before.keys) << what;
  };
  refused(m.g2.Snapshot(), "group 2's snapshot");
  refused("\xff\xff\xff\xff", "garbage");
  refused(before.substr(0, before.size() / 2), "truncated");
  pb::ShardKvSnapshot snap;
  ASSERT_TRUE(snap.ParseFromString(before));
  pb::ShardKvSnapshot fewer = snap;
  fewer.mutable_shards()->RemoveLast();
  refused(fewer.SerializeAsString(), "a shard missing");
  // The last two are refused midway through the shards: nothing of them,
  // not even their configuration, may stick.
  pb::ShardKvSnapshot dup = snap;
  dup.mutable_current()->set_num(7);
  dup.mutable_shards(kShards - 1)->set_state(pb::SHARD_SERVING);
  *dup.mutable_shards(1)->add_data() = dup.shards(1).data(0);
  refused(dup.SerializeAsString(), "a duplicate key");
  pb::ShardKvSnapshot order = snap;
  order.mutable_current()->set_num(7);
  order.mutable_shards()->SwapElements(3, 4);
  refused(order.SerializeAsString(), "shards out of order");
  EXPECT_EQ(g.Read(KeyIn(1)), "10");
}

TEST(ShardKvSnapshot, ThroughTheSessionLayerRoundTripsAndRefusesAnotherGroup) {
  ShardKvStateMachine app1(1), app1b(1), app2(2);
  rsm::SessionStateMachine sm1(&app1), sm1b(&app1b), sm2(&app2);
  const rsm::pb::SessionRef ref = rsm::MakeSessionRef(7, kT0, 1);
  ASSERT_TRUE(sm1.Apply(rsm::EncodeCommand(nullptr, ConfigCmd(1, Split()), kT0), 1).ok());
  ASSERT_TRUE(sm1.Apply(rsm::EncodeCommand(&ref, Append(KeyIn(0), "x"), kT0 + 1), 2).ok());
  const std::string bytes = sm1.Snapshot();
  ASSERT_TRUE(sm1b.Restore(bytes).ok());
  EXPECT_EQ(sm1b.Snapshot(), bytes);
  EXPECT_EQ(sm1b.applied_index(), 2u);
  // The retry is answered from the restored session, not applied again.
  ASSERT_TRUE(sm1b.Apply(rsm::EncodeCommand(&ref, Append(KeyIn(0), "x"), kT0 + 2), 3).ok());
  EXPECT_EQ(Show(app1b.Get(KeyIn(0))), "x");

  const std::string before2 = sm2.Snapshot();
  EXPECT_EQ(sm2.Restore(bytes).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sm2.Snapshot(), before2);
  EXPECT_EQ(sm2.applied_index(), 0u);
  EXPECT_EQ(sm2.sessions().size(), 0);
}

// ---------------------------------------------------------------------------
// view()
// ---------------------------------------------------------------------------

TEST(ShardKvView, ReportsStatesStagedChunksLastStagedKeyAndKeyCounts) {
  MidMigration m;
  ShardKvStateMachine::View v = m.g1.sm().view();
  EXPECT_EQ(v.gid, 1u);
  EXPECT_EQ(v.current.num(), 2u);
  EXPECT_EQ(v.previous.num(), 1u);
  ASSERT_EQ(v.states.size(), kShards);
  ASSERT_EQ(v.staged_chunks.size(), kShards);
  ASSERT_EQ(v.last_staged_key.size(), kShards);
  ASSERT_EQ(v.keys.size(), kShards);
  const std::vector<pb::ShardState> states = {
      pb::SHARD_HANDING_OFF, pb::SHARD_SERVING,  pb::SHARD_SERVING,    pb::SHARD_SERVING,
      pb::SHARD_SERVING,     pb::SHARD_PULLING,  pb::SHARD_GC_PENDING, pb::SHARD_NOT_OWNED,
      pb::SHARD_NOT_OWNED,   pb::SHARD_NOT_OWNED};
  EXPECT_EQ(v.states, states);
  std::vector<std::string> keys5 = {KeyIn(5, 0), KeyIn(5, 1), KeyIn(5, 2), KeyIn(5, 3)};
  std::sort(keys5.begin(), keys5.end());
  for (uint32_t s = 0; s < kShards; ++s) {
    EXPECT_EQ(v.staged_chunks[s], s == 5 ? 1u : 0u) << s;
    EXPECT_EQ(v.last_staged_key[s], s == 5 ? keys5[0] : "") << s;
    // Keys held: serving, gc-pending and handing-off shards; staged keys are
    // not counted until installed.
    EXPECT_EQ(v.keys[s], s <= 4 || s == 6 ? 4u : 0u) << s;
  }
  EXPECT_FALSE(v.settled());
  EXPECT_EQ(std::string(StateName(pb::SHARD_SERVING)), "serving");
  EXPECT_EQ(std::string(StateName(pb::SHARD_PULLING)), "pulling");
  EXPECT_EQ(std::string(StateName(pb::SHARD_HANDING_OFF)), "handing-off");
  EXPECT_EQ(std::string(StateName(pb::SHARD_GC_PENDING)), "gc-pending");
  EXPECT_EQ(std::string(StateName(pb::SHARD_NOT_OWNED)), "not-owned");
}

TEST(ShardKvView, KeyCountsFollowEveryWrite) {
  Group g(1);
  g.Do(ConfigCmd(1, AllTo(1)));
  ASSERT_TRUE(g.Write(Put(KeyIn(2, 0), "a")).ok());
  ASSERT_TRUE(g.Write(Append(KeyIn(2, 1), "b")).ok());
  EXPECT_EQ(g.Keys(2), 2u);
  ASSERT_TRUE(g.Write(Put(KeyIn(2, 0), "again")).ok());
  EXPECT_EQ(g.Keys(2), 2u);
  ASSERT_TRUE(g.Write(Kv(kv::pb::OP_DELETE, KeyIn(2, 0))).ok());
  EXPECT_EQ(g.Keys(2), 1u);
  EXPECT_EQ(g.Keys(3), 0u);
}

TEST(ShardKvView, SettledOnlyWhenEveryShardServesOrIsNotOwned) {
  ShardKvStateMachine::View v;
  EXPECT_TRUE(v.settled());
  v.states = {pb::SHARD_SERVING, pb::SHARD_NOT_OWNED};
  EXPECT_TRUE(v.settled());
  for (pb::ShardState s : {pb::SHARD_PULLING, pb::SHARD_HANDING_OFF, pb::SHARD_GC_PENDING}) {
    v.states = {pb::SHARD_SERVING, s};
    EXPECT_FALSE(v.settled()) << StateName(s);
  }
}

// ---------------------------------------------------------------------------
// The key hash
// ---------------------------------------------------------------------------

TEST(KeyToShard, IsStableFnv1a) {
  // FNV-1a 64 test vectors, then golden shards: a change here re-homes every
  // key of every deployed cluster.
  EXPECT_EQ(StableKeyHash(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(StableKeyHash("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(StableKeyHash("foobar"), 0x85944171f73967e8ull);
  EXPECT_EQ(KeyToShard("a", 10), 6u);
  EXPECT_EQ(KeyToShard("foobar", 10), 8u);
  EXPECT_EQ(KeyToShard("0", 10), 9u);
  EXPECT_EQ(KeyToShard("1", 10), 8u);
  EXPECT_EQ(KeyToShard("9", 10), 6u);
  EXPECT_EQ(KeyToShard("key-0", 10), 3u);
  EXPECT_EQ(KeyToShard("key-1", 10), 2u);
  EXPECT_EQ(KeyToShard("user:42", 10), 0u);
  EXPECT_EQ(KeyToShard("user:42", 3), 2u);
  EXPECT_EQ(KeyToShard(std::string("\xff\x00z", 3), 1), 0u);
  EXPECT_EQ(KeyToShard("anything", 0), 0u) << "no configuration yet";
}

TEST(KeyToShard, SpreadsKeysOverTheShards) {
  std::vector<int> count(kShards, 0);
  for (int i = 0; i < 10000; ++i) ++count[KeyToShard(absl::StrCat("key-", i), kShards)];
  for (uint32_t s = 0; s < kShards; ++s) {
    EXPECT_GT(count[s], 800) << "shard " << s;
    EXPECT_LT(count[s], 1200) << "shard " << s;
  }
}

// ---------------------------------------------------------------------------
// Through the session layer: wrong group is not recorded; exactly-once
// across a migration
// ---------------------------------------------------------------------------

// One replica: the state machine under rsm::SessionStateMachine, fed log
// entries one index at a time, the proposer's clock advancing 1 ms each.
class Replica {
 public:
  explicit Replica(uint64_t gid, rsm::SessionOptions options = {})
      : app_(gid), sm_(&app_, options) {}

  absl::StatusOr<std::string> Submit(const pb::ShardKvCommand& cmd,
                                     const rsm::pb::SessionRef* ref = nullptr) {
    clock_ += 1000;
    return sm_.Apply(rsm::EncodeCommand(ref, cmd, clock_), ++index_);
  }
  void Internal(const pb::ShardKvCommand& cmd) {
    absl::StatusOr<std::string> r = Submit(cmd);
    EXPECT_TRUE(r.ok()) << r.status() << " for " << cmd.ShortDebugString();
  }
  void InternalAll(const std::vector<pb::ShardKvCommand>& cmds) {
    for (const pb::ShardKvCommand& cmd : cmds) Internal(cmd);
  }
  std::vector<pb::ShardKvCommand> PullFor(uint64_t num, uint32_t shard) const {
    return PullCommands(app_, sm_.sessions(), num, shard);
  }
  std::string Read(const std::string& key) const { return Show(app_.Get(key)); }
  const ShardKvStateMachine& app() const { return app_; }
  const rsm::SessionTable& sessions() const { return sm_.sessions(); }

 private:
  ShardKvStateMachine app_;
  rsm::SessionStateMachine sm_;
  uint64_t index_ = 0;
  int64_t clock_ = kT0;
};

// Groups 1 and 2 at configuration 1 (Split()) as replicas; Move() makes
// configuration 2 (kMoved to 2) and migrates kMoved completely.
struct TwoReplicas {
  Replica a;
  Replica b;
  explicit TwoReplicas(rsm::SessionOptions options = {}) : a(1, options), b(2, options) {
    a.Internal(ConfigCmd(1, Split()));
    b.Internal(ConfigCmd(1, Split()));
  }
  void Move() {
    a.Internal(ConfigCmd(2, Moved(Split(), kMoved, 2)));
    b.Internal(ConfigCmd(2, Moved(Split(), kMoved, 2)));
    b.InternalAll(a.PullFor(2, kMoved));
    a.Internal(DeleteCmd(2, kMoved));
    b.Internal(HandoffCmd(2, kMoved));
    EXPECT_EQ(b.app().view().states.at(kMoved), pb::SHARD_SERVING);
  }
};

TEST(ShardKvSessions, WrongGroupWriteIsNotRecordedAndItsRetryIsAppliedOnceServed) {
  TwoReplicas t;
  const std::string key = KeyIn(kMoved);
  // The client's first command goes to b, which does not own the key yet.
  const rsm::pb::SessionRef x1 = rsm::MakeSessionRef(7, kT0, 1);
  EXPECT_EQ(t.b.Submit(Append(key, "x"), &x1).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(t.b.sessions().size(), 0) << "a refused first command opens no session";
  // Its second command is refused too, after the first was applied elsewhere.
  const rsm::pb::SessionRef y1 = rsm::MakeSessionRef(8, kT0, 1);
  const rsm::pb::SessionRef y2 = rsm::MakeSessionRef(8, kT0, 2);
  ASSERT_TRUE(t.b.Submit(Put(KeyIn(7), "y"), &y1).ok());
  EXPECT_EQ(t.b.Submit(Append(key, "y"), &y2).status().code(),
            absl::StatusCode::kFailedPrecondition);
  std::string cached;
  EXPECT_EQ(t.b.sessions().Check(y2, &cached), rsm::SessionTable::Verdict::kNew)
      << "the refused command was not recorded";
  t.Move();
  // The same SessionRefs, now at the owner: applied, once.
  ASSERT_TRUE(t.b.Submit(Append(key, "x"), &x1).ok());
  ASSERT_TRUE(t.b.Submit(Append(key, "y"), &y2).ok());
  ASSERT_TRUE(t.b.Submit(Append(key, "x"), &x1).ok());  // retries: answered, not applied
  ASSERT_TRUE(t.b.Submit(Append(key, "y"), &y2).ok());
  EXPECT_EQ(t.b.Read(key), "xy");
}

TEST(ShardKvSessions, AppendAppliedByTheOldOwnerIsNotAppliedAgainAtTheNewOwner) {
  TwoReplicas t;
  const std::string key = KeyIn(kMoved);
  const rsm::pb::SessionRef x1 = rsm::MakeSessionRef(7, kT0, 1);
  const rsm::pb::SessionRef x2 = rsm::MakeSessionRef(7, kT0, 2);
  ASSERT_TRUE(t.a.Submit(Put(key, "v"), &x1).ok());
  absl::StatusOr<std::string> first = t.a.Submit(Append(key, "x"), &x2);  // the reply is lost
  ASSERT_TRUE(first.ok()) << first.status();
  // b knows the client from an earlier command on another shard.
  const rsm::pb::SessionRef other = rsm::MakeSessionRef(9, kT0, 1);
  ASSERT_TRUE(t.b.Submit(Put(KeyIn(7), "o"), &other).ok());
  t.Move();
  // The client re-reads the configuration and retries at b, same SessionRef.
  absl::StatusOr<std::string> retry = t.b.Submit(Append(key, "x"), &x2);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(*retry, *first) << "the cached result";
  EXPECT_EQ(t.b.Read(key), "vx") << "applied once";
  const rsm::pb::SessionRef x3 = rsm::MakeSessionRef(7, kT0, 3);
  ASSERT_TRUE(t.b.Submit(Append(key, "y"), &x3).ok());
  EXPECT_EQ(t.b.Read(key), "vxy");
  EXPECT_EQ(t.b.Submit(Append(key, "x"), &x2).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(t.b.Read(key), "vxy");
  // b's own client's session survived the merge.
  std::string cached;
  EXPECT_EQ(t.b.sessions().Check(other, &cached), rsm::SessionTable::Verdict::kDuplicate);
}

// ---------------------------------------------------------------------------
// Exactly-once across a migration once a session has been forgotten (evicted
// past max_sessions or expired past session_ttl): the session table's rule
// "unknown and created after the watermark = new" must survive combining two
// tables (regression tests: both were applied twice before
// SessionTable::MergeTable and the watermark check in Merge).
// ---------------------------------------------------------------------------

// A session the old owner forgot is unknown at the new owner and created
// after the new owner's own watermark: without the old owner's watermark its
// retry would be taken for a new session and applied again. At the old owner
// the same retry is refused (kAborted); so must it be at the new owner.
TEST(ShardKvForgottenSessions, RetryOfASessionTheOldOwnerForgotIsNotAppliedTwice) {
  rsm::SessionOptions options;
  options.max_sessions = 1;
  TwoReplicas t(options);
  const std::string key = KeyIn(kMoved);
  const rsm::pb::SessionRef x1 = rsm::MakeSessionRef(7, kT0, 1);
  ASSERT_TRUE(t.a.Submit(Append(key, "x"), &x1).ok());  // applied; the reply is lost
  const rsm::pb::SessionRef y1 = rsm::MakeSessionRef(8, kT0 + 1, 1);
  ASSERT_TRUE(t.a.Submit(Put(KeyIn(0), "y"), &y1).ok());  // evicts x at a
  ASSERT_EQ(t.a.Submit(Append(key, "x"), &x1).status().code(), absl::StatusCode::kAborted)
      << "a itself refuses the retry: x may have been applied";
  t.Move();
  absl::StatusOr<std::string> retry = t.b.Submit(Append(key, "x"), &x1);
  EXPECT_EQ(retry.status().code(), absl::StatusCode::kAborted) << retry.status();
  EXPECT_EQ(t.b.Read(key), "x") << "the Append was applied twice";
}

// A session the new owner forgot must not come back with the old owner's
// (older) sequence: a retry of a later command the new owner applied before
// forgetting the session would then be classified kNew and applied again.
TEST(ShardKvForgottenSessions, MergeDoesNotResurrectASessionTheNewOwnerForgot) {
  rsm::SessionOptions options;
  options.max_sessions = 1;
  TwoReplicas t(options);
  const rsm::pb::SessionRef x1 = rsm::MakeSessionRef(7, kT0, 1);
  const rsm::pb::SessionRef x2 = rsm::MakeSessionRef(7, kT0, 2);
  ASSERT_TRUE(t.a.Submit(Put(KeyIn(kMoved), "x1"), &x1).ok());  // x's seq 1, at a
  ASSERT_TRUE(t.b.Submit(Append(KeyIn(7), "x"), &x2).ok());     // seq 2, at b; reply lost
  const rsm::pb::SessionRef y1 = rsm::MakeSessionRef(8, kT0 + 1, 1);
  ASSERT_TRUE(t.b.Submit(Put(KeyIn(8), "y"), &y1).ok());  // evicts x at b
  ASSERT_EQ(t.b.Submit(Append(KeyIn(7), "x"), &x2).status().code(), absl::StatusCode::kAborted);
  t.Move();  // brings x at seq 1 from a
  absl::StatusOr<std::string> retry = t.b.Submit(Append(KeyIn(7), "x"), &x2);
  EXPECT_EQ(retry.status().code(), absl::StatusCode::kAborted) << retry.status();
  EXPECT_EQ(t.b.Read(KeyIn(7)), "x") << "the Append was applied twice";
}

// ---------------------------------------------------------------------------
// The state on disk (RocksDB): the same log applied in memory and on disk,
// the disk replica crashing between batches, ends in the same state.
// ---------------------------------------------------------------------------

// Group 2's log: configuration 1, writes, configuration 2 gaining kMoved
// from group 1 (pulled in small chunks), writes to it, the hand-off, then
// configuration 3 giving shard 5 to group 1 and its garbage collection.
std::vector<std::string> MigrationLog() {
  TwoGroups t;  // group 1's side, to pull from
  std::vector<pb::ShardKvCommand> cmds = {ConfigCmd(1, Split())};
  for (uint32_t s = 5; s < kShards; ++s) {
    for (int i = 0; i < 6; ++i) cmds.push_back(Append(KeyIn(s, i % 3), absl::StrCat(s, i, ";")));
  }
  cmds.push_back(ConfigCmd(2, Moved(Split(), kMoved, 2)));
  for (auto& c : PullCommands(t.a.sm(), t.a.sessions(), 2, kMoved, 20)) cmds.push_back(c);
  cmds.push_back(Append(KeyIn(kMoved, 0), "+moved"));
  cmds.push_back(Kv(kv::pb::OP_DELETE, KeyIn(kMoved, 1)));
  cmds.push_back(HandoffCmd(2, kMoved));
  cmds.push_back(ConfigCmd(3, Moved(Moved(Split(), kMoved, 2), 5, 1)));
  cmds.push_back(Put(KeyIn(6, 0), "after 3"));
  cmds.push_back(DeleteCmd(3, 5));
  std::vector<std::string> log;
  for (size_t i = 0; i < cmds.size(); ++i) {
    log.push_back(
        rsm::EncodeCommand(nullptr, cmds[i].SerializeAsString(), kT0 + static_cast<int64_t>(i)));
  }
  return log;
}

struct DiskGroup {
  explicit DiskGroup(const std::string& dir) : app(2) {
    auto opened = rsm::DiskState::Open({.dir = dir, .memtable_bytes = 1 << 20});
    EXPECT_TRUE(opened.ok()) << opened.status();
    disk = std::move(*opened);
    sm = std::make_unique<rsm::SessionStateMachine>(&app, rsm::SessionOptions{}, disk.get());
    EXPECT_TRUE(sm->Open().ok());
  }
  ShardKvStateMachine app;
  std::unique_ptr<rsm::DiskState> disk;
  std::unique_ptr<rsm::SessionStateMachine> sm;
};

std::string Outcome(const absl::StatusOr<std::string>& r) {
  return r.ok() ? "ok:" + *r : r.status().ToString();
}

TEST(ShardKvOnDisk, AMigrationAppliedOnDiskThroughCrashesEndsAsInMemory) {
  ::ds::testing::TempDir tmp("shardkv-disk");
  const std::string dir = tmp.path() + "/state";
  const std::vector<std::string> log = MigrationLog();
  ASSERT_GT(log.size(), 35u);
  ShardKvStateMachine mem_app(2);
  rsm::SessionStateMachine mem(&mem_app);
  std::vector<std::string> want;
  for (size_t i = 0; i < log.size(); ++i) want.push_back(Outcome(mem.Apply(log[i], i + 1)));
  EXPECT_EQ(mem_app.view().states[kMoved], pb::SHARD_SERVING);
  EXPECT_EQ(mem_app.view().states[5], pb::SHARD_NOT_OWNED);

  std::mt19937 rng(4);
  auto disk = std::make_unique<DiskGroup>(dir);
  int crashes = 0;
  while (disk->sm->applied_index() < log.size()) {
    const size_t from = disk->sm->applied_index();
    const size_t n = std::min<size_t>(1 + rng() % 8, log.size() - from);
    for (size_t i = from; i < from + n; ++i) {
      ASSERT_EQ(Outcome(disk->sm->Apply(log[i], i + 1)), want[i]) << "entry " << i + 1;
    }
    if (rng() % 4 == 0) {
      disk.reset();  // kill -9: the batch was never written
      disk = std::make_unique<DiskGroup>(dir);
      ASSERT_EQ(disk->sm->applied_index(), from);
      ++crashes;
      continue;
    }
    disk->sm->FinishBatch();
  }
  EXPECT_GT(crashes, 3);
  EXPECT_EQ(disk->sm->Snapshot(), mem.Snapshot());
  const ShardKvStateMachine::View dv = disk->app.view(), mv = mem_app.view();
  EXPECT_EQ(dv.states, mv.states);
  EXPECT_EQ(dv.keys, mv.keys);
  EXPECT_EQ(dv.keys[5], 0u) << "garbage collected";
  // The shard handed off is one key range, gone from the disk.
  int left = 0;
  disk->disk->app()->Scan("d", "e", [&left](std::string_view k, std::string_view) {
    left += k.substr(1, 4) == std::string("\0\0\0\5", 4);
    return true;
  });
  EXPECT_EQ(left, 0);

  // The in-memory form converts into a fresh state on disk (the upgrade).
  const std::string old_form = mem.Snapshot();
  disk.reset();
  (void)common::RemoveTree(dir);
  disk = std::make_unique<DiskGroup>(dir);
  ASSERT_TRUE(disk->sm->Restore(old_form).ok());
  disk.reset();
  disk = std::make_unique<DiskGroup>(dir);
  EXPECT_EQ(disk->sm->Snapshot(), old_form);
  EXPECT_EQ(disk->app.view().keys, mv.keys);
}

}  // namespace
}  // namespace ds::shardkv
