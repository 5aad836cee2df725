// The harness of the in-process 6.824 lab 4A (shard controller) scenarios:
// a ReplicaGroup (tests/rsm/replica_group.h) of CtrlStateMachines whose
// clients are the production CtrlClient (client/ctrl_client.h) over an
// in-process transport that runs the server's own request path
// (ctrl::HandleCtrlRequest) through the simulated network; and the checks
// the lab makes on configurations, shared with the multi-process tests.
//
// What the clerks model, after 6.824's shardctrler/config.go: a clerk
// reaches its own set of replicas, remembers the leader, retries at another
// replica on "not leader", a timeout or a lost call, gives Join/Leave/Move
// exactly-once semantics with a session that its first write opens, and
// retries "forever" (30 s here, so that a test ends).
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/ctrl_client.h"
#include "proto/shardctrler.pb.h"
#include "shardctrler/ctrl_service.h"
#include "tests/rsm/replica_group.h"

namespace ds::ctrl::lab4a {

using client::GroupServers;
using rsm::testing::CurrentTestSeed;

// Replicas, Raft timing, seed: see rsm::testing::ReplicaGroupOptions. The lab
// runs 3 controllers on a reliable network: {.servers = 3, .seed = ...}.
using ClusterOptions = rsm::testing::ReplicaGroupOptions;

class Clerk;

class Cluster : public rsm::testing::ReplicaGroup {
 public:
  // Every replica runs a CtrlStateMachine with `shard_count` shards (the
  // lab's NShards) and serves requests with the same --shards.
  explicit Cluster(ClusterOptions options, int shard_count = kDefaultShardCount);

  int shard_count() const { return service_.shard_count; }
  const CtrlServiceOptions& service() const { return service_; }

  // A clerk that reaches `servers` (default: all).
  std::unique_ptr<Clerk> MakeClerk(std::vector<int> servers = {});

 private:
  const CtrlServiceOptions service_;
};

class Clerk {
 public:
  // Deadline of one attempt at one replica (then try another).
  static constexpr absl::Duration kAttemptTimeout = absl::Milliseconds(500);
  // A clerk retries "forever" as in 6.824, but tests must end: an operation
  // that has not completed after this long fails (kDeadlineExceeded).
  static constexpr absl::Duration kGiveUpAfter = absl::Seconds(30);

  Clerk(Cluster* cluster, std::vector<int> servers, uint64_t seed);
  ~Clerk();
  Clerk(const Clerk&) = delete;
  Clerk& operator=(const Clerk&) = delete;

  // Join, Leave and Move return the number of the configuration they made.
  absl::StatusOr<uint64_t> Join(GroupServers groups);
  absl::StatusOr<uint64_t> Leave(std::vector<uint64_t> gids);
  absl::StatusOr<uint64_t> Move(uint32_t shard, uint64_t gid);
  absl::StatusOr<uint64_t> Servers(uint64_t gid, std::vector<std::string> servers);
  // Configuration `num`; -1 or past the latest: the latest.
  absl::StatusOr<pb::Config> Query(int64_t num = -1);

  // Which replicas this clerk's calls can reach (config.go's ConnectClient).
  void ConnectTo(std::vector<int> servers);

 private:
  class Transport;
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<client::CtrlClient> client_;
};

// ---------------------------------------------------------------------------
// Checks on configurations. Each returns "" when the property holds, else
// what is wrong (so that client threads and the multi-process tests can use
// them as well as the lab's sequential code).
// ---------------------------------------------------------------------------

// The gids of `config`'s groups.
std::set<uint64_t> GroupIds(const pb::Config& config);

// The configuration is well formed: `shard_count` shards, groups sorted by
// gid with no gid twice and none 0, each with at least one server; with no
// groups every shard on gid 0, else every shard on a group of the
// configuration.
std::string Malformed(const pb::Config& config, int shard_count);

// Shard counts of the configuration's groups differ by at most one.
std::string Unbalanced(const pb::Config& config);

// 6.824's check(groups) on a configuration: exactly `groups`, every shard on
// one of them (if any), balanced; plus Malformed.
std::string CheckGroups(const pb::Config& config, const std::set<uint64_t>& groups,
                        int shard_count = kDefaultShardCount);

// 6.824's check_same_config: the same number, the same shards, the same
// groups each with the same servers in the same order.
std::string ConfigDifference(const pb::Config& want, const pb::Config& got);

// The fewest shards that must change owner to take `before`'s assignment to
// one that is balanced over `groups` (every group q = S/|groups| or q + 1
// shards; none: every shard on gid 0). Computed from the counts alone, not
// with the rebalancer: a group can keep min(its count, its target) shards,
// and the q + 1 targets go best to the groups owning the most.
int MinimalMoves(const pb::Config& before, const std::set<uint64_t>& groups);

// The configuration `after` that a Join of `joined` (Leave: `left`; one of
// the two is empty) made from `before`: numbered before + 1; its groups are
// before's plus joined minus left, the kept ones with unchanged servers and
// the joined ones with `joined_servers` (may be empty: not checked); it is
// balanced; exactly MinimalMoves shards changed owner; and if `before` was
// balanced, shards moved only to joining groups (join) or only away from
// leaving groups (leave). The real property behind the lab's vacuous
// "minimal transfers" checks.
std::string TransitionProblem(const pb::Config& before, const pb::Config& after,
                              const std::set<uint64_t>& joined, const std::set<uint64_t>& left,
                              const GroupServers& joined_servers = {});

// The configuration `after` that Move(shard, gid) made from `before`:
// numbered before + 1, the same groups, `shard` on `gid`, every other shard
// where it was.
std::string MoveProblem(const pb::Config& before, const pb::Config& after, uint32_t shard,
                        uint64_t gid);

}  // namespace ds::ctrl::lab4a
