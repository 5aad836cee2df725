#include "shardkv/shardkv_state_machine.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kvraft/kv_state_machine.h"
#include "shardkv/key_shard.h"

namespace ds::shardkv {

const char* StateName(pb::ShardState state) {
  switch (state) {
    case pb::SHARD_SERVING:
      return "serving";
    case pb::SHARD_PULLING:
      return "pulling";
    case pb::SHARD_HANDING_OFF:
      return "handing-off";
    case pb::SHARD_GC_PENDING:
      return "gc-pending";
    default:
      return "not-owned";
  }
}

namespace {

bool Serves(pb::ShardState s) { return s == pb::SHARD_SERVING || s == pb::SHARD_GC_PENDING; }

// Shard s's keys are ShardPrefix(s) + key; the record of everything else is
// under kMetaKey.
constexpr char kMetaKey[] = "M";
constexpr size_t kPrefixBytes = 5;

std::string ShardPrefix(uint32_t s) {
  std::string p = "d";
  for (int i = 3; i >= 0; --i) p.push_back(static_cast<char>((s >> (8 * i)) & 0xff));
  return p;
}

// The pairs of shard s, keys without the prefix.
void SavePairsOf(const rsm::AppState& state, uint32_t s,
                 google::protobuf::RepeatedPtrField<kv::pb::KvPair>* out) {
  state.Scan(ShardPrefix(s), ShardPrefix(s + 1), [out](std::string_view k, std::string_view v) {
    kv::pb::KvPair* pair = out->Add();
    pair->set_key(k.data() + kPrefixBytes, k.size() - kPrefixBytes);
    pair->set_value(v.data(), v.size());
    return true;
  });
}

absl::Status CheckSorted(const google::protobuf::RepeatedPtrField<kv::pb::KvPair>& pairs) {
  for (int i = 1; i < pairs.size(); ++i) {
    if (!(pairs[i - 1].key() < pairs[i].key())) {
      return absl::InvalidArgumentError("duplicate or unsorted key in a snapshot");
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool ShardKvStateMachine::View::settled() const {
  for (pb::ShardState s : states) {
    if (s != pb::SHARD_SERVING && s != pb::SHARD_NOT_OWNED) return false;
  }
  return true;
}

ShardKvStateMachine::ShardKvStateMachine(uint64_t gid) : gid_(gid) { PublishView(); }

void ShardKvStateMachine::Attach(rsm::AppState* state) {
  state_ = state;
  pb::ShardKvSnapshot meta;
  if (std::optional<std::string> bytes = state_->Get(kMetaKey)) {
    if (!meta.ParseFromString(*bytes) || !Check(meta).ok()) {
      // The record was written by this code with the data: a corrupt one
      // means the disk lies; serving from it would be wrong.
      std::fprintf(stderr, "shardkv group %llu: the state's shard record is corrupt\n",
                   static_cast<unsigned long long>(gid_));
      std::abort();
    }
  } else {
    meta.set_gid(gid_);
  }
  LoadMeta(meta);
}

void ShardKvStateMachine::SaveToState() { state_->Put(kMetaKey, Meta().SerializeAsString()); }

void ShardKvStateMachine::ClearShard(uint32_t s) {
  state_->DeleteRange(ShardPrefix(s), ShardPrefix(s + 1));
  shards_[s].key_count = 0;
}

absl::StatusOr<std::string> ShardKvStateMachine::Apply(std::string_view command,
                                                       const rsm::ApplyContext& context) {
  pb::ShardKvCommand cmd;
  if (!cmd.ParseFromArray(command.data(), static_cast<int>(command.size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("entry ", context.index, " is not a ShardKvCommand"));
  }
  switch (cmd.op_case()) {
    case pb::ShardKvCommand::kKv:
      return ApplyKv(cmd.kv());
    case pb::ShardKvCommand::kConfig:
      if (absl::Status st = ApplyConfig(cmd.config().config()); !st.ok()) return st;
      break;
    case pb::ShardKvCommand::kInstallChunk:
      ApplyInstallChunk(*cmd.mutable_install_chunk());
      break;
    case pb::ShardKvCommand::kInstallDone:
      ApplyInstallDone(cmd.install_done(), context);
      break;
    case pb::ShardKvCommand::kDeleteShard:
      ApplyDeleteShard(cmd.delete_shard());
      break;
    case pb::ShardKvCommand::kHandoffDone:
      ApplyHandoffDone(cmd.handoff_done());
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("entry ", context.index, ": no operation"));
  }
  PublishView();
  return std::string();
}

absl::StatusOr<uint32_t> ShardKvStateMachine::ServingShard(std::string_view key) const {
  const uint32_t count = static_cast<uint32_t>(current_.shards_size());
  const uint32_t shard = KeyToShard(key, count);
  if (count == 0 || !Serves(shards_[shard].state)) {
    return absl::FailedPreconditionError(
        absl::StrCat("wrong group: shard ", shard, " is not served by group ", gid_, " (",
                     count == 0 ? "no configuration yet" : StateName(shards_[shard].state),
                     " in configuration ", current_.num(), ")"));
  }
  return shard;
}

absl::StatusOr<std::string> ShardKvStateMachine::ApplyKv(const kv::pb::KvCommand& cmd) {
  absl::StatusOr<uint32_t> shard = ServingShard(cmd.key());
  if (!shard.ok()) return shard.status();
  Shard& s = shards_[*shard];
  int64_t delta = 0;
  absl::StatusOr<kv::pb::KvResult> r = kv::ExecuteOn(*state_, ShardPrefix(*shard), cmd, &delta);
  if (!r.ok()) return r.status();
  s.key_count = static_cast<uint64_t>(static_cast<int64_t>(s.key_count) + delta);
  s.keys->store(s.key_count, std::memory_order_relaxed);
  return r->SerializeAsString();
}

absl::StatusOr<kv::pb::KvResult> ShardKvStateMachine::Get(std::string_view key) const {
  absl::StatusOr<uint32_t> shard = ServingShard(key);
  if (!shard.ok()) return shard.status();
  return kv::GetFrom(*state_, ShardPrefix(*shard), key);
}

bool ShardKvStateMachine::SettledLocked() const {
  for (const Shard& s : shards_) {
    if (s.state != pb::SHARD_SERVING && s.state != pb::SHARD_NOT_OWNED) return false;
  }
  return true;
}

absl::Status ShardKvStateMachine::ApplyConfig(const ctrl::pb::Config& config) {
  // One number at a time, and only once the current change is finished; a
  // stale or early proposal (a leader's retry, a replay) changes nothing.
  if (config.num() != current_.num() + 1 || !SettledLocked()) return absl::OkStatus();
  if (current_.num() > 0 && config.shards_size() != current_.shards_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("configuration ", config.num(), " has ", config.shards_size(),
                     " shards, configuration ", current_.num(), " had ", current_.shards_size()));
  }
  if (config.shards_size() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("configuration ", config.num(), " has no shards"));
  }
  if (shards_.empty()) shards_.resize(config.shards_size());
  for (int s = 0; s < config.shards_size(); ++s) {
    const uint64_t before = current_.num() == 0 ? 0 : current_.shards(s);
    const uint64_t after = config.shards(s);
    Shard& shard = shards_[s];
    if (after == gid_ && before != gid_) {
      // Gained: from nobody it starts empty; from a group, its data comes.
      shard.state = before == 0 ? pb::SHARD_SERVING : pb::SHARD_PULLING;
      ClearShard(static_cast<uint32_t>(s));
      shard.staged_chunks = 0;
      shard.last_staged_key.clear();
    } else if (after != gid_ && before == gid_) {
      shard.state = pb::SHARD_HANDING_OFF;  // kept, frozen, until the new owner has it
    }
  }
  previous_ = current_;
  current_ = config;
  return absl::OkStatus();
}

void ShardKvStateMachine::ApplyInstallChunk(pb::InstallChunk& chunk) {
  if (chunk.config_num() != current_.num() || chunk.shard() >= shards_.size()) return;
  Shard& shard = shards_[chunk.shard()];
  if (shard.state != pb::SHARD_PULLING) return;
  // Chunk 0 starts over (a new leader pulling from the beginning); any other
  // must be the next one, so duplicates and gaps are ignored.
  if (chunk.chunk() == 0) {
    ClearShard(chunk.shard());
    shard.staged_chunks = 0;
    shard.last_staged_key.clear();
  } else if (chunk.chunk() != shard.staged_chunks) {
    return;
  }
  // Straight into the shard's range: it is not served until InstallDone.
  const std::string prefix = ShardPrefix(chunk.shard());
  for (const kv::pb::KvPair& pair : chunk.data()) {
    const std::string key = absl::StrCat(prefix, pair.key());
    if (!state_->Get(key)) ++shard.key_count;
    state_->Put(key, pair.value());
    if (pair.key() > shard.last_staged_key) shard.last_staged_key = pair.key();
  }
  shard.staged_chunks = chunk.chunk() + 1;
}

void ShardKvStateMachine::ApplyInstallDone(const pb::InstallDone& done,
                                           const rsm::ApplyContext& context) {
  if (done.config_num() != current_.num() || done.shard() >= shards_.size()) return;
  Shard& shard = shards_[done.shard()];
  if (shard.state != pb::SHARD_PULLING || shard.staged_chunks != done.chunks()) return;
  shard.staged_chunks = 0;
  shard.last_staged_key.clear();
  shard.state = pb::SHARD_GC_PENDING;  // served from now on
  // Exactly-once across the move: a command the previous owner applied and
  // answered, retried here, must find its session here.
  // Sessions the previous owner forgot stay refused here too (MergeTable).
  context.sessions->MergeTable(done.sessions(), context.clock_unix_micros);
}

void ShardKvStateMachine::ApplyDeleteShard(const pb::DeleteShardCommand& del) {
  if (del.config_num() != current_.num() || del.shard() >= shards_.size()) return;
  Shard& shard = shards_[del.shard()];
  if (shard.state != pb::SHARD_HANDING_OFF) return;
  ClearShard(del.shard());  // garbage collection: the shard's key range
  shard.state = pb::SHARD_NOT_OWNED;
}

void ShardKvStateMachine::ApplyHandoffDone(const pb::HandoffDone& done) {
  if (done.config_num() != current_.num() || done.shard() >= shards_.size()) return;
  Shard& shard = shards_[done.shard()];
  if (shard.state == pb::SHARD_GC_PENDING) shard.state = pb::SHARD_SERVING;
}

absl::StatusOr<pb::PullShardResponse> ShardKvStateMachine::Pull(
    const pb::PullShardRequest& req, const rsm::SessionTable& sessions) const {
  if (current_.num() < req.config_num()) {
    return absl::UnavailableError(absl::StrCat("group ", gid_, " is not at configuration ",
                                               req.config_num(), " yet (at ", current_.num(),
                                               "); retry"));
  }
  if (current_.num() > req.config_num() || req.shard() >= shards_.size() ||
      shards_[req.shard()].state != pb::SHARD_HANDING_OFF) {
    return absl::FailedPreconditionError(
        absl::StrCat("group ", gid_, " does not hand off shard ", req.shard(), " at configuration ",
                     req.config_num(), " (at ", current_.num(), ")"));
  }
  pb::PullShardResponse resp;
  const uint64_t max_bytes = req.max_bytes() > 0 ? req.max_bytes() : (1u << 20);
  // The pairs after `after_key` (exclusive), about max_bytes of them, at
  // least one if any; done if none is left after them.
  const std::string prefix = ShardPrefix(req.shard());
  std::string begin = prefix;
  if (!req.from_start()) begin += req.after_key() + std::string(1, '\0');
  uint64_t bytes = 0;
  bool done = true;
  state_->Scan(begin, ShardPrefix(req.shard() + 1), [&](std::string_view k, std::string_view v) {
    const size_t size = k.size() - kPrefixBytes + v.size();
    if (bytes > 0 && bytes + size > max_bytes) {
      done = false;
      return false;
    }
    bytes += size;
    kv::pb::KvPair* pair = resp.add_data();
    pair->set_key(k.data() + kPrefixBytes, k.size() - kPrefixBytes);
    pair->set_value(v.data(), v.size());
    return true;
  });
  resp.set_done(done);
  if (done) sessions.SaveTo(resp.mutable_sessions());
  return resp;
}

pb::ShardKvSnapshot ShardKvStateMachine::Meta() const {
  pb::ShardKvSnapshot snap;
  snap.set_gid(gid_);
  *snap.mutable_current() = current_;
  *snap.mutable_previous() = previous_;
  for (size_t s = 0; s < shards_.size(); ++s) {
    pb::ShardRecord* r = snap.add_shards();
    r->set_shard(static_cast<uint32_t>(s));
    r->set_state(shards_[s].state);
    r->set_staged_chunks(shards_[s].staged_chunks);
    r->set_key_count(shards_[s].key_count);
    r->set_last_staged_key(shards_[s].last_staged_key);
  }
  return snap;
}

void ShardKvStateMachine::SnapshotTo(std::string* out) const {
  pb::ShardKvSnapshot snap = Meta();
  for (pb::ShardRecord& r : *snap.mutable_shards()) {
    // The form of the build that kept shards in memory: a shard being pulled
    // has what arrived so far as `staged`.
    SavePairsOf(*state_, r.shard(),
                r.state() == pb::SHARD_PULLING ? r.mutable_staged() : r.mutable_data());
    r.clear_key_count();
    r.clear_last_staged_key();
  }
  snap.AppendToString(out);
}

absl::Status ShardKvStateMachine::Check(const pb::ShardKvSnapshot& snap) const {
  if (snap.gid() != gid_) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot of group ", snap.gid(), " given to group ", gid_));
  }
  if (snap.shards_size() != (snap.current().num() == 0 ? 0 : snap.current().shards_size())) {
    return absl::InvalidArgumentError("snapshot's shards do not match its configuration");
  }
  for (int s = 0; s < snap.shards_size(); ++s) {
    if (snap.shards(s).shard() != static_cast<uint32_t>(s)) {
      return absl::InvalidArgumentError("snapshot's shards are out of order");
    }
  }
  return absl::OkStatus();
}

void ShardKvStateMachine::LoadMeta(pb::ShardKvSnapshot& snap) {
  std::vector<Shard> shards(snap.shards_size());
  for (int s = 0; s < snap.shards_size(); ++s) {
    const pb::ShardRecord& r = snap.shards(s);
    shards[s].state = r.state();
    shards[s].staged_chunks = r.staged_chunks();
    shards[s].key_count = r.key_count();
    shards[s].last_staged_key = r.last_staged_key();
  }
  shards_ = std::move(shards);
  current_ = std::move(*snap.mutable_current());
  previous_ = std::move(*snap.mutable_previous());
  PublishView();
}

absl::Status ShardKvStateMachine::Restore(std::string_view bytes) {
  pb::ShardKvSnapshot snap;
  if (!snap.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError("not a ShardKvSnapshot");
  }
  if (absl::Status st = Check(snap); !st.ok()) return st;
  for (const pb::ShardRecord& r : snap.shards()) {
    if (absl::Status st = CheckSorted(r.data()); !st.ok()) return st;
    if (absl::Status st = CheckSorted(r.staged()); !st.ok()) return st;
  }
  state_->DeleteRange("", "");
  for (pb::ShardRecord& r : *snap.mutable_shards()) {
    const auto& pairs = r.state() == pb::SHARD_PULLING ? r.staged() : r.data();
    const std::string prefix = ShardPrefix(r.shard());
    for (const kv::pb::KvPair& pair : pairs) state_->Put(prefix + pair.key(), pair.value());
    r.set_key_count(static_cast<uint64_t>(pairs.size()));
    r.set_last_staged_key(r.state() == pb::SHARD_PULLING && !pairs.empty()
                              ? pairs[pairs.size() - 1].key()
                              : std::string());
    r.clear_data();
    r.clear_staged();
  }
  LoadMeta(snap);
  return absl::OkStatus();
}

ShardKvStateMachine::View ShardKvStateMachine::view() const {
  absl::MutexLock lock(&view_mu_);
  View v = view_;
  v.keys.clear();
  for (const auto& k : key_counts_) v.keys.push_back(k->load(std::memory_order_relaxed));
  return v;
}

void ShardKvStateMachine::PublishView() {
  View v;
  v.gid = gid_;
  v.current = current_;
  v.previous = previous_;
  std::vector<std::shared_ptr<std::atomic<uint64_t>>> counts;
  for (const Shard& s : shards_) {
    v.states.push_back(s.state);
    v.staged_chunks.push_back(s.staged_chunks);
    v.last_staged_key.push_back(s.last_staged_key);
    // Staged keys are not counted until installed.
    s.keys->store(s.state == pb::SHARD_PULLING ? 0 : s.key_count, std::memory_order_relaxed);
    counts.push_back(s.keys);
  }
  absl::MutexLock lock(&view_mu_);
  view_ = std::move(v);
  key_counts_ = std::move(counts);
}

}  // namespace ds::shardkv
