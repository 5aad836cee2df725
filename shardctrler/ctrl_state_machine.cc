#include "shardctrler/ctrl_state_machine.h"

#include <algorithm>
#include <utility>

#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/strings/str_cat.h"
#include "shardctrler/rebalance.h"

namespace ds::ctrl {
namespace {

pb::Config EmptyConfig(int shard_count) {
  pb::Config config;
  config.mutable_shards()->Resize(shard_count, 0);
  return config;
}

int ClampShardCount(int shard_count) { return std::clamp(shard_count, 1, kMaxShardCount); }

bool HasGroup(const pb::Config& config, uint64_t gid) {
  auto it = std::lower_bound(config.groups().begin(), config.groups().end(), gid,
                             [](const pb::Group& g, uint64_t id) { return g.gid() < id; });
  return it != config.groups().end() && it->gid() == gid;
}

std::vector<uint64_t> Gids(const pb::Config& config) {
  std::vector<uint64_t> gids;
  gids.reserve(config.groups_size());
  for (const pb::Group& g : config.groups()) gids.push_back(g.gid());
  return gids;
}

// Replaces `config`'s shards with the rebalanced assignment over its groups.
void RebalanceInto(pb::Config* config) {
  const std::vector<uint64_t> shards =
      Rebalance(absl::MakeConstSpan(config->shards().data(), config->shards_size()), Gids(*config));
  config->mutable_shards()->Assign(shards.begin(), shards.end());
}

// Whether `config` (at position `num` of a history with `shard_count` shards)
// is one the state machine could have made.
absl::Status ValidateConfig(const pb::Config& config, uint64_t num, int shard_count) {
  if (config.num() != num) {
    return absl::InvalidArgumentError(
        absl::StrCat("configuration ", num, " is numbered ", config.num()));
  }
  if (config.shards_size() != shard_count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "configuration ", num, " has ", config.shards_size(), " shards, not ", shard_count));
  }
  uint64_t previous = 0;
  for (const pb::Group& g : config.groups()) {
    if (g.gid() <= previous) {
      return absl::InvalidArgumentError(
          absl::StrCat("configuration ", num, ": groups not sorted by nonzero gid"));
    }
    if (g.servers().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("configuration ", num, ": group ", g.gid(), " has no servers"));
    }
    previous = g.gid();
  }
  if (num == 0 && config.groups_size() > 0) {
    return absl::InvalidArgumentError("configuration 0 has groups");
  }
  for (int s = 0; s < config.shards_size(); ++s) {
    // Rebalance leaves no shard unassigned while any group exists.
    const uint64_t gid = config.shards(s);
    if (config.groups().empty() ? gid != 0 : !HasGroup(config, gid)) {
      return absl::InvalidArgumentError(
          absl::StrCat("configuration ", num, ": shard ", s, " on absent group ", gid));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateShardCount(int64_t shard_count) {
  if (shard_count < 1 || shard_count > kMaxShardCount) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard count ", shard_count, " is outside [1, ", kMaxShardCount, "]"));
  }
  return absl::OkStatus();
}

CtrlStateMachine::CtrlStateMachine(CtrlStateMachineOptions options)
    : shard_count_(ClampShardCount(options.shard_count)) {
  configs_.push_back(EmptyConfig(shard_count_));
}

absl::StatusOr<std::string> CtrlStateMachine::Apply(std::string_view command,
                                                    const rsm::ApplyContext& context) {
  pb::CtrlCommand cmd;
  if (!cmd.ParseFromArray(command.data(), static_cast<int>(command.size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("entry ", context.index, " is not a CtrlCommand"));
  }
  absl::StatusOr<pb::CtrlResult> result = Execute(cmd);
  if (!result.ok()) {
    return absl::Status(result.status().code(),
                        absl::StrCat("entry ", context.index, ": ", result.status().message()));
  }
  return result->SerializeAsString();
}

absl::StatusOr<pb::CtrlResult> CtrlStateMachine::Execute(const pb::CtrlCommand& cmd) {
  if (cmd.op_case() == pb::CtrlCommand::kQuery) {
    pb::CtrlResult result;
    *result.mutable_config() = Query(cmd.query().has_num() ? cmd.query().num() : -1);
    result.set_num(result.config().num());
    return result;
  }
  if (cmd.op_case() == pb::CtrlCommand::OP_NOT_SET) {
    return absl::InvalidArgumentError("command has no operation");
  }
  if (absl::Status s = CheckCommandShardCount(cmd.shard_count()); !s.ok()) return s;
  switch (cmd.op_case()) {
    case pb::CtrlCommand::kJoin:
      return Join(cmd.join(), static_cast<int>(cmd.shard_count()));
    case pb::CtrlCommand::kLeave:
      return Leave(cmd.leave());
    case pb::CtrlCommand::kMove:
      return Move(cmd.move());
    case pb::CtrlCommand::kServers:
      return Servers(cmd.servers());
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown operation ", cmd.op_case()));
  }
}

absl::Status CtrlStateMachine::CheckCommandShardCount(uint32_t shard_count) const {
  if (absl::Status s = ValidateShardCount(shard_count); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("command's ", s.message()));
  }
  if (shard_count_fixed() && static_cast<int>(shard_count) != shard_count_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the proposing server has ", shard_count, " shards (--shards) but the controller's ",
        "shard count was fixed at ", shard_count_, " by configuration 1"));
  }
  return absl::OkStatus();
}

void CtrlStateMachine::FixShardCount(int shard_count) {
  // Only before configuration 1: configuration 0 has no groups, so it is the
  // same empty configuration at any count.
  if (shard_count_fixed() || shard_count == shard_count_) return;
  shard_count_ = shard_count;
  configs_.front() = EmptyConfig(shard_count_);
}

absl::StatusOr<pb::CtrlResult> CtrlStateMachine::Join(const pb::JoinCommand& join,
                                                      int shard_count) {
  if (join.groups().empty()) return absl::InvalidArgumentError("join names no group");
  const pb::Config& current = latest();
  absl::btree_map<uint64_t, const pb::Group*> joining;
  for (const pb::Group& g : join.groups()) {
    if (g.gid() == 0) return absl::InvalidArgumentError("join: gid 0 is reserved (unassigned)");
    if (HasGroup(current, g.gid())) {
      return absl::InvalidArgumentError(
          absl::StrCat("join: group ", g.gid(), " is already in configuration ", current.num()));
    }
    if (g.servers().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("join: group ", g.gid(), " has no servers"));
    }
    for (const std::string& server : g.servers()) {
      if (server.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("join: group ", g.gid(), " has an empty server address"));
      }
    }
    if (!joining.emplace(g.gid(), &g).second) {
      return absl::InvalidArgumentError(absl::StrCat("join: group ", g.gid(), " appears twice"));
    }
  }

  // Only a join can make configuration 1 (Leave and Move need a group).
  FixShardCount(shard_count);
  pb::Config next = latest();
  // Merge the sorted current groups with the sorted joining ones.
  absl::btree_map<uint64_t, pb::Group> groups;
  for (const pb::Group& g : next.groups()) groups.emplace(g.gid(), g);
  for (const auto& [gid, g] : joining) groups.emplace(gid, *g);
  next.clear_groups();
  for (auto& [gid, g] : groups) *next.add_groups() = std::move(g);
  RebalanceInto(&next);
  return Commit(std::move(next));
}

absl::StatusOr<pb::CtrlResult> CtrlStateMachine::Leave(const pb::LeaveCommand& leave) {
  if (leave.gids().empty()) return absl::InvalidArgumentError("leave names no group");
  const pb::Config& current = latest();
  absl::btree_set<uint64_t> leaving;
  for (uint64_t gid : leave.gids()) {
    if (!HasGroup(current, gid)) {
      return absl::InvalidArgumentError(
          absl::StrCat("leave: group ", gid, " is not in configuration ", current.num()));
    }
    if (!leaving.insert(gid).second) {
      return absl::InvalidArgumentError(absl::StrCat("leave: group ", gid, " appears twice"));
    }
  }
  pb::Config next;
  next.mutable_shards()->CopyFrom(current.shards());
  for (const pb::Group& g : current.groups()) {
    if (!leaving.contains(g.gid())) *next.add_groups() = g;
  }
  RebalanceInto(&next);
  return Commit(std::move(next));
}

absl::StatusOr<pb::CtrlResult> CtrlStateMachine::Move(const pb::MoveCommand& move) {
  const pb::Config& current = latest();
  if (move.shard() >= static_cast<uint32_t>(shard_count_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("move: shard ", move.shard(), " is out of range [0, ", shard_count_, ")"));
  }
  if (!HasGroup(current, move.gid())) {
    return absl::InvalidArgumentError(
        absl::StrCat("move: group ", move.gid(), " is not in configuration ", current.num()));
  }
  // Always a new configuration, even when the shard is already there (lab 4A:
  // a Move increases the number), and no rebalancing: Move overrides balance.
  pb::Config next = current;
  next.set_shards(static_cast<int>(move.shard()), move.gid());
  return Commit(std::move(next));
}

absl::StatusOr<pb::CtrlResult> CtrlStateMachine::Servers(const pb::ServersCommand& servers) {
  const pb::Config& current = latest();
  if (servers.gid() == 0) {
    return absl::InvalidArgumentError("servers: gid 0 is reserved (unassigned)");
  }
  if (!HasGroup(current, servers.gid())) {
    return absl::InvalidArgumentError(
        absl::StrCat("servers: group ", servers.gid(), " is not in configuration ", current.num()));
  }
  if (servers.servers().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("servers: no servers for group ", servers.gid()));
  }
  for (const std::string& server : servers.servers()) {
    if (server.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("servers: group ", servers.gid(), " has an empty server address"));
    }
  }
  pb::Config next = current;
  for (pb::Group& g : *next.mutable_groups()) {
    if (g.gid() != servers.gid()) continue;
    if (std::equal(g.servers().begin(), g.servers().end(), servers.servers().begin(),
                   servers.servers().end())) {
      // Already the list: no new configuration (the group's leader may send
      // it again after a leader change, or before it sees the configuration
      // its previous call made).
      pb::CtrlResult result;
      result.set_num(current.num());
      return result;
    }
    *g.mutable_servers() = servers.servers();
  }
  return Commit(std::move(next));
}

pb::CtrlResult CtrlStateMachine::Commit(pb::Config config) {
  const uint64_t num = configs_.size();
  config.set_num(num);
  configs_.push_back(std::move(config));
  latest_num_.store(num, std::memory_order_release);
  pb::CtrlResult result;
  result.set_num(num);
  return result;
}

const pb::Config& CtrlStateMachine::Query(int64_t num) const {
  if (num < 0 || static_cast<uint64_t>(num) >= configs_.size()) return configs_.back();
  return configs_[static_cast<size_t>(num)];
}

absl::Status CtrlStateMachine::CheckShardCount(int64_t flag_shard_count) const {
  if (!shard_count_fixed() || flag_shard_count == shard_count_) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the stored configurations have ", shard_count_, " shards but --shards=", flag_shard_count,
      "; the shard count is fixed by the first configuration: restart with --shards=",
      shard_count_));
}

void CtrlStateMachine::SnapshotTo(std::string* out) const {
  pb::CtrlSnapshot snapshot;
  snapshot.set_shard_count(static_cast<uint32_t>(shard_count_));
  for (const pb::Config& config : configs_) *snapshot.add_configs() = config;
  // Deterministic serialization is not needed: no map fields, every list
  // sorted, so equal states give equal bytes.
  snapshot.AppendToString(out);
}

absl::Status CtrlStateMachine::Restore(std::string_view bytes) {
  pb::CtrlSnapshot snapshot;
  if (!snapshot.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError("not a CtrlSnapshot");
  }
  if (absl::Status s = ValidateShardCount(snapshot.shard_count()); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("snapshot's ", s.message()));
  }
  if (snapshot.configs().empty())
    return absl::InvalidArgumentError("snapshot has no configuration");
  const int shard_count = static_cast<int>(snapshot.shard_count());
  for (int i = 0; i < snapshot.configs_size(); ++i) {
    if (absl::Status s = ValidateConfig(snapshot.configs(i), static_cast<uint64_t>(i), shard_count);
        !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("snapshot: ", s.message()));
    }
  }
  std::vector<pb::Config> configs;
  configs.reserve(snapshot.configs_size());
  for (pb::Config& config : *snapshot.mutable_configs()) configs.push_back(std::move(config));
  configs_ = std::move(configs);
  shard_count_ = shard_count;
  latest_num_.store(configs_.back().num(), std::memory_order_release);
  return absl::OkStatus();
}

}  // namespace ds::ctrl
