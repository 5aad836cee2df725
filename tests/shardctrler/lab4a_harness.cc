#include "tests/shardctrler/lab4a_harness.h"

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "shardctrler/ctrl_state_machine.h"

namespace ds::ctrl::lab4a {

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

namespace {

ClusterOptions Named(ClusterOptions options) {
  if (options.name == ClusterOptions().name) options.name = "ctrl";
  return options;
}

}  // namespace

Cluster::Cluster(ClusterOptions options, int shard_count)
    : ReplicaGroup(Named(std::move(options)),
                   [shard_count] {
                     return std::make_unique<CtrlStateMachine>(
                         CtrlStateMachineOptions{.shard_count = shard_count});
                   }),
      service_{.shard_count = shard_count} {}

std::unique_ptr<Clerk> Cluster::MakeClerk(std::vector<int> servers) {
  if (servers.empty()) servers = All();
  return std::make_unique<Clerk>(this, std::move(servers), NextSeed());
}

// ---------------------------------------------------------------------------
// Clerk
// ---------------------------------------------------------------------------

// CtrlRequests through the simulated network to the server's own request path.
class Clerk::Transport final {
 public:
  using Link =
      rsm::testing::LinkTransport<client::CtrlTransport, pb::CtrlRequest, pb::CtrlResponse>;
  Transport(Cluster* cluster, std::vector<int> servers, uint64_t seed)
      : net(cluster, std::move(servers), seed,
            [service = cluster->service()](const rsm::ReplicaContext& replica,
                                           pb::CtrlRequest request, absl::Time deadline,
                                           std::function<void(pb::CtrlResponse)> done) {
              HandleCtrlRequest(replica, service, std::move(request), deadline, std::move(done));
            }) {}
  Link net;
};

Clerk::Clerk(Cluster* cluster, std::vector<int> servers, uint64_t seed)
    : transport_(std::make_unique<Transport>(cluster, std::move(servers), seed)) {
  client::RetryOptions retry;
  retry.operation_timeout = kGiveUpAfter;
  retry.attempt_timeout = kAttemptTimeout;
  // Short pauses: a clerk should find a new leader within a few election
  // timeouts (100-200 ms here), as 6.824's clerks do.
  retry.initial_backoff = absl::Milliseconds(5);
  retry.max_backoff = absl::Milliseconds(50);
  client_ = std::make_unique<client::CtrlClient>(
      &transport_->net, std::make_shared<client::LeaderCache>(transport_->net.endpoints()), retry);
}

Clerk::~Clerk() = default;

void Clerk::ConnectTo(std::vector<int> servers) {
  transport_->net.link().ConnectTo(std::move(servers));
}

absl::StatusOr<uint64_t> Clerk::Join(GroupServers groups) {
  return client::Await<absl::StatusOr<uint64_t>>(
      [&](auto cb) { client_->Join(std::move(groups), std::move(cb)); });
}

absl::StatusOr<uint64_t> Clerk::Leave(std::vector<uint64_t> gids) {
  return client::Await<absl::StatusOr<uint64_t>>(
      [&](auto cb) { client_->Leave(std::move(gids), std::move(cb)); });
}

absl::StatusOr<uint64_t> Clerk::Move(uint32_t shard, uint64_t gid) {
  return client::Await<absl::StatusOr<uint64_t>>(
      [&](auto cb) { client_->Move(shard, gid, std::move(cb)); });
}

absl::StatusOr<uint64_t> Clerk::Servers(uint64_t gid, std::vector<std::string> servers) {
  return client::Await<absl::StatusOr<uint64_t>>(
      [&](auto cb) { client_->Servers(gid, std::move(servers), std::move(cb)); });
}

absl::StatusOr<pb::Config> Clerk::Query(int64_t num) {
  return client::Await<absl::StatusOr<pb::Config>>(
      [&](auto cb) { client_->Query(num, std::move(cb)); });
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

namespace {

// gid -> number of shards it owns, for every group of `config` (0 for a
// group without shards). Shards on gid 0 or on an absent gid are not counted.
std::map<uint64_t, int> ShardCounts(const pb::Config& config) {
  std::map<uint64_t, int> counts;
  for (const pb::Group& g : config.groups()) counts[g.gid()] = 0;
  for (uint64_t gid : config.shards()) {
    if (auto it = counts.find(gid); it != counts.end()) ++it->second;
  }
  return counts;
}

std::string Gids(const std::set<uint64_t>& gids) {
  return absl::StrCat("{", absl::StrJoin(gids, ","), "}");
}

const pb::Group* FindGroup(const pb::Config& config, uint64_t gid) {
  for (const pb::Group& g : config.groups()) {
    if (g.gid() == gid) return &g;
  }
  return nullptr;
}

std::vector<std::string> Servers(const pb::Group& g) {
  return {g.servers().begin(), g.servers().end()};
}

}  // namespace

std::set<uint64_t> GroupIds(const pb::Config& config) {
  std::set<uint64_t> gids;
  for (const pb::Group& g : config.groups()) gids.insert(g.gid());
  return gids;
}

std::string Malformed(const pb::Config& config, int shard_count) {
  const std::string where = absl::StrCat("configuration ", config.num(), ": ");
  if (config.shards_size() != shard_count) {
    return absl::StrCat(where, config.shards_size(), " shards, want ", shard_count);
  }
  uint64_t previous = 0;
  for (const pb::Group& g : config.groups()) {
    if (g.gid() <= previous) {
      return absl::StrCat(
          where, "groups not sorted by nonzero gid, each once: ", config.ShortDebugString());
    }
    if (g.servers().empty()) return absl::StrCat(where, "group ", g.gid(), " has no servers");
    previous = g.gid();
  }
  const std::set<uint64_t> gids = GroupIds(config);
  for (int s = 0; s < config.shards_size(); ++s) {
    const uint64_t gid = config.shards(s);
    if (gids.empty() ? gid != 0 : !gids.contains(gid)) {
      // 6.824: "shard %v -> invalid group %v".
      return absl::StrCat(where, "shard ", s, " -> invalid group ", gid, " (groups ", Gids(gids),
                          ")");
    }
  }
  return "";
}

std::string Unbalanced(const pb::Config& config) {
  const std::map<uint64_t, int> counts = ShardCounts(config);
  if (counts.empty()) return "";
  int min = config.shards_size() + 1;
  int max = -1;
  for (const auto& [gid, n] : counts) {
    min = std::min(min, n);
    max = std::max(max, n);
  }
  if (max > min + 1) {
    return absl::StrCat("configuration ", config.num(), ": max ", max, " too much larger than min ",
                        min, ": ", config.ShortDebugString());
  }
  return "";
}

std::string CheckGroups(const pb::Config& config, const std::set<uint64_t>& groups,
                        int shard_count) {
  const std::set<uint64_t> got = GroupIds(config);
  if (got.size() != groups.size()) {
    return absl::StrCat("configuration ", config.num(), ": wanted ", groups.size(), " groups, got ",
                        got.size(), " (want ", Gids(groups), ", got ", Gids(got), ")");
  }
  for (uint64_t g : groups) {
    if (!got.contains(g))
      return absl::StrCat("configuration ", config.num(), ": missing group ", g);
  }
  if (std::string m = Malformed(config, shard_count); !m.empty()) return m;
  return Unbalanced(config);
}

std::string ConfigDifference(const pb::Config& want, const pb::Config& got) {
  const std::string both =
      absl::StrCat("\n  want ", want.ShortDebugString(), "\n  got  ", got.ShortDebugString());
  if (want.num() != got.num()) return absl::StrCat("num ", got.num(), " != ", want.num(), both);
  if (!std::equal(want.shards().begin(), want.shards().end(), got.shards().begin(),
                  got.shards().end())) {
    return absl::StrCat("configuration ", want.num(), ": shards differ", both);
  }
  if (want.groups_size() != got.groups_size()) {
    return absl::StrCat("configuration ", want.num(), ": groups differ", both);
  }
  for (int i = 0; i < want.groups_size(); ++i) {
    if (want.groups(i).gid() != got.groups(i).gid() ||
        Servers(want.groups(i)) != Servers(got.groups(i))) {
      return absl::StrCat("configuration ", want.num(), ": group ", want.groups(i).gid(),
                          " differs (servers in order)", both);
    }
  }
  return "";
}

int MinimalMoves(const pb::Config& before, const std::set<uint64_t>& groups) {
  const int shards = before.shards_size();
  if (groups.empty()) {
    return static_cast<int>(std::count_if(before.shards().begin(), before.shards().end(),
                                          [](uint64_t gid) { return gid != 0; }));
  }
  std::vector<int> counts;  // of the groups that will own shards, before
  for (uint64_t g : groups) {
    counts.push_back(
        static_cast<int>(std::count(before.shards().begin(), before.shards().end(), g)));
  }
  std::sort(counts.rbegin(), counts.rend());
  const int q = shards / static_cast<int>(groups.size());
  const int r = shards % static_cast<int>(groups.size());
  int stay = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    stay += std::min(counts[i], q + (static_cast<int>(i) < r ? 1 : 0));
  }
  return shards - stay;
}

std::string TransitionProblem(const pb::Config& before, const pb::Config& after,
                              const std::set<uint64_t>& joined, const std::set<uint64_t>& left,
                              const GroupServers& joined_servers) {
  const std::string what =
      absl::StrCat(joined.empty() ? "leave " : "join ", Gids(joined.empty() ? left : joined),
                   " (configuration ", before.num(), " -> ", after.num(), "): ");
  const std::string both = absl::StrCat("\n  before ", before.ShortDebugString(), "\n  after  ",
                                        after.ShortDebugString());
  if (after.num() != before.num() + 1) return absl::StrCat(what, "not consecutive", both);
  if (before.shards_size() != after.shards_size()) {
    return absl::StrCat(what, "the shard count changed", both);
  }
  std::set<uint64_t> want = GroupIds(before);
  for (uint64_t g : joined) {
    if (!want.insert(g).second) return absl::StrCat(what, "group ", g, " was already there", both);
  }
  for (uint64_t g : left) {
    if (want.erase(g) == 0) return absl::StrCat(what, "group ", g, " was not there", both);
  }
  if (std::string m = CheckGroups(after, want, after.shards_size()); !m.empty()) {
    return absl::StrCat(what, m, both);
  }
  for (const pb::Group& g : after.groups()) {
    if (const pb::Group* old = FindGroup(before, g.gid()); old != nullptr) {
      if (Servers(*old) != Servers(g)) {
        return absl::StrCat(what, "the servers of kept group ", g.gid(), " changed", both);
      }
    } else if (auto it = joined_servers.find(g.gid());
               it != joined_servers.end() && it->second != Servers(g)) {
      return absl::StrCat(what, "group ", g.gid(), " has servers [", absl::StrJoin(Servers(g), ","),
                          "], joined with [", absl::StrJoin(it->second, ","), "]", both);
    }
  }
  int moved = 0;
  const bool from_balance = Unbalanced(before).empty();
  for (int s = 0; s < after.shards_size(); ++s) {
    const uint64_t from = before.shards(s);
    const uint64_t to = after.shards(s);
    if (from == to) continue;
    ++moved;
    if (!from_balance || GroupIds(before).empty()) continue;
    if (!left.empty() && !left.contains(from)) {
      return absl::StrCat(what, "shard ", s, " moved from group ", from, ", which is not leaving (",
                          from, " -> ", to, ")", both);
    }
    if (!joined.empty() && !joined.contains(to)) {
      return absl::StrCat(what, "shard ", s, " moved to group ", to, ", which is not joining (",
                          from, " -> ", to, ")", both);
    }
  }
  if (const int minimal = MinimalMoves(before, want); moved != minimal) {
    return absl::StrCat(what, moved, " shards changed owner, balance needs exactly ", minimal,
                        both);
  }
  return "";
}

std::string MoveProblem(const pb::Config& before, const pb::Config& after, uint32_t shard,
                        uint64_t gid) {
  const std::string what = absl::StrCat("move shard ", shard, " to ", gid, " (configuration ",
                                        before.num(), " -> ", after.num(), "): ");
  const std::string both = absl::StrCat("\n  before ", before.ShortDebugString(), "\n  after  ",
                                        after.ShortDebugString());
  if (after.num() != before.num() + 1) return absl::StrCat(what, "not consecutive", both);
  if (before.shards_size() != after.shards_size() ||
      static_cast<int>(shard) >= after.shards_size()) {
    return absl::StrCat(what, "bad shard count", both);
  }
  if (after.shards(static_cast<int>(shard)) != gid) {
    return absl::StrCat(what, "shard ", shard, " is on ", after.shards(static_cast<int>(shard)),
                        both);
  }
  for (int s = 0; s < after.shards_size(); ++s) {
    if (s != static_cast<int>(shard) && after.shards(s) != before.shards(s)) {
      return absl::StrCat(what, "shard ", s, " moved too", both);
    }
  }
  pb::Config same_groups = before;
  *same_groups.mutable_shards() = after.shards();
  same_groups.set_num(after.num());
  if (std::string d = ConfigDifference(same_groups, after); !d.empty()) {
    return absl::StrCat(what, "the groups changed: ", d);
  }
  return "";
}

}  // namespace ds::ctrl::lab4a
