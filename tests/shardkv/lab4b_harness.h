// The harness of the in-process 6.824 lab 4B (sharded KV) scenarios, after
// 6.824's shardkv/config.go: one shard controller (3 replicas of the
// production CtrlStateMachine, tests/shardctrler/lab4a_harness.h) and replica
// groups 100, 101, 102 (3 replicas each of the production
// ShardKvStateMachine), every one a ReplicaGroup (tests/rsm/replica_group.h)
// on its own fault-injecting network, all in one process and reached through
// the production request paths:
//   - clients: the production ShardedKvClient (client/shardkv_client.h) over
//     in-process transports that run kv::HandleKvRequest with
//     shardkv::ShardKvBackend on a replica, and a CtrlClient that runs
//     ctrl::HandleCtrlRequest on a controller replica; every operation is
//     recorded for the linearizability checker, as in lab 3;
//   - each shardkv replica incarnation runs the production ShardKvDriver
//     (shardkv/driver.h), started after its Rsm and stopped before it stops
//     (a ReplicaCompanion): its ConfigSource is a CtrlClient, its PeerGroups
//     resolve the server names of a configuration to the in-process groups and
//     run shardkv::HandleMigrationRequest there (MigrationClient).
//
// Server names: configurations list a group's replicas by their client
// addresses, "g100-r1", "g100-r2", "g100-r3" (ReplicaGroupOptions::
// endpoint_prefix), which Resolve() maps back to the group.
//
// Faults as in config.go: ShutdownServer(g, i) crashes one replica (its
// driver stops first, so it sends nothing more; unsynced writes are lost, as
// in lab 3), ShutdownGroup/StartGroup act on the 3 replicas of a group;
// `unreliable` makes every network unreliable (controller, groups, clients,
// migrations between groups); SetReliable(true) heals them all.
//
// Timing: Raft as in lab 3 (10 ms ticks, elections after 100-200 ms: 6.824's
// divided by 10); the drivers poll the controller every 20 ms (6.824's
// 100 ms divided by 5: not by 10, so that three group leaders polling do not
// keep the controller busy on a loaded 2-core machine under ASan); calls
// between groups give up after 500 ms (shardkv-server: 3 s) and the driver's
// own proposals after 1 s (5 s), so that a group that is down delays
// another's pass by little. Clerks retry "forever" (30 s, so that a test
// ends).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/ctrl_client.h"
#include "client/replica_client.h"
#include "client/shardkv_client.h"
#include "proto/shardctrler.pb.h"
#include "raft/core/rng.h"
#include "shardkv/driver.h"
#include "shardkv/shardkv_service.h"
#include "tests/lincheck/linearizability.h"
#include "tests/rsm/replica_group.h"
#include "tests/shardctrler/lab4a_harness.h"

namespace ds::shardkv::lab4b {

using rsm::testing::CurrentTestSeed;

struct ClusterOptions {
  // Replica groups (6.824's ngroups), gids 100, 101, ... Default: 3.
  int groups = 3;
  // Replicas per group (6.824's n). Default: 3.
  int servers = 3;
  // Every network unreliable (controller, groups, clients). Default: no.
  bool unreliable = false;
  // 6.824's maxraftstate for the shardkv replicas (the controller never
  // snapshots). Unit: bytes. -1: never snapshot. Default: -1.
  int64_t maxraftstate = -1;
  // Seeds every network and Raft core (tests pass CurrentTestSeed()).
  uint64_t seed = 1;
  // The drivers': poll every 20 ms, 2 KiB chunks (so that shards of the
  // tests with larger values move in several chunks), proposals give up
  // after 1 s.
  DriverOptions driver = {.poll_interval = absl::Milliseconds(20),
                          .chunk_bytes = 2048,
                          .propose_timeout = absl::Seconds(1)};
  // The drivers' calls to the controller and to other groups.
  client::RetryOptions driver_calls = {.operation_timeout = absl::Milliseconds(500),
                                       .attempt_timeout = absl::Milliseconds(250),
                                       .initial_backoff = absl::Milliseconds(5),
                                       .max_backoff = absl::Milliseconds(50)};
};

class Clerk;

class Cluster {
 public:
  explicit Cluster(ClusterOptions options);
  // Stops every driver first (they call other groups), then the groups.
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  const ClusterOptions& options() const { return options_; }
  int groups() const { return options_.groups; }
  int n() const { return options_.servers; }
  // Group gi's gid: 100 + gi.
  static uint64_t Gid(int gi) { return 100 + static_cast<uint64_t>(gi); }
  rsm::testing::ReplicaGroup& group(int gi) { return *groups_[gi]; }
  ctrl::lab4a::Cluster& controller() { return *ctrl_; }

  // The controller, through the test's own clerk (config.go's mck). Each
  // failure is reported through gtest; Join/Leave return false then.
  bool Join(int gi) { return JoinM({gi}); }
  bool JoinM(const std::vector<int>& gis);
  bool Leave(int gi) { return LeaveM({gi}); }
  bool LeaveM(const std::vector<int>& gis);
  // Configuration `num` (-1: the latest); empty on failure (reported).
  ctrl::pb::Config Query(int64_t num = -1);

  // config.go's crashes: replica i of group gi (its driver first).
  void ShutdownServer(int gi, int i);
  void StartServer(int gi, int i);
  void ShutdownGroup(int gi);
  void StartGroup(int gi);

  // Every network reliable or not (config.go's net.Reliable).
  void SetReliable(bool reliable);

  // config.go's checklogs(): with maxraftstate >= 0 every replica's persisted
  // Raft state is at most 8 * maxraftstate; with -1, no replica has a
  // snapshot. Failures through gtest.
  void CheckLogs();
  // The sum over every replica of every group of its persisted Raft state
  // plus its snapshot (TestChallenge1Delete's measure).
  uint64_t StorageBytes() const;

  // Waits until every replica that is up has applied the latest
  // configuration and finished the change to it (every shard serving or not
  // owned: shards pulled, handed-off copies deleted). False on timeout.
  bool WaitSettled(absl::Duration timeout);

  // The group whose replicas' addresses are exactly `servers`, in order
  // (what a configuration lists); nullptr if none.
  rsm::testing::ReplicaGroup* Resolve(const std::vector<std::string>& servers) const;

  // A new clerk (config.go's makeClient); `give_up_after` bounds each of its
  // operations (6.824's retry forever).
  std::unique_ptr<Clerk> MakeClerk(absl::Duration give_up_after = absl::Seconds(30));

  // Where clerks record operations; TakeHistory() returns what was recorded
  // and starts a new history (call it while no clerk is in an operation).
  lincheck::HistoryRecorder& history() { return history_; }
  std::vector<lincheck::Operation> TakeHistory() { return history_.Take(); }

  uint64_t NextSeed() { return ctrl_->NextSeed(); }

 private:
  class Driver;
  class ControllerSource;
  class PeerGroupsImpl;

  const ClusterOptions options_;
  std::unique_ptr<ctrl::lab4a::Cluster> ctrl_;
  std::unique_ptr<ctrl::lab4a::Clerk> admin_;  // config.go's mck
  mutable absl::Mutex mu_;                     // groups_ (groups restart while clerks look them up)
  std::vector<std::unique_ptr<rsm::testing::ReplicaGroup>> groups_;
  std::atomic<int64_t> next_clerk_label_{1};
  lincheck::HistoryRecorder history_;
};

// 6.824's shardkv Clerk: the production ShardedKvClient, with a session of
// its own, recording each operation in the cluster's history. One operation
// at a time.
class Clerk {
 public:
  // Deadline of one attempt at one replica (then try another).
  static constexpr absl::Duration kAttemptTimeout = absl::Milliseconds(500);

  Clerk(Cluster* cluster, int64_t label, uint64_t seed, absl::Duration give_up_after);
  ~Clerk();
  Clerk(const Clerk&) = delete;
  Clerk& operator=(const Clerk&) = delete;

  // A missing key reads "" (6.824's Get).
  absl::StatusOr<std::string> Get(const std::string& key);
  absl::Status Put(const std::string& key, const std::string& value);
  absl::Status Append(const std::string& key, const std::string& value);

  int64_t label() const { return label_; }

 private:
  class Groups;
  Cluster* const cluster_;
  const int64_t label_;
  std::unique_ptr<Groups> groups_;
  std::unique_ptr<client::ShardedKvClient> client_;
};

// ---------------------------------------------------------------------------
// What the lab's tests share
// ---------------------------------------------------------------------------

// The lab's sleeps, scaled: 6.824's test_test.go waits (150 ms ... 3 s, the
// 2 s quiet window of TestStaticShards, the 12 s of TestConcurrent3) are
// divided by kLabScale. Raft runs 10x faster than 6.824's (lab 3's timing)
// but a configuration change here costs several round trips through two
// groups and the controller on a loaded machine, so the waits shrink less.
inline constexpr int kLabScale = 5;
inline absl::Duration Scaled(absl::Duration lab) { return lab / kLabScale; }

// 6.824's randstring(n): n characters of base64url, from `rng`.
std::string RandString(raft::Rng& rng, int n);

// The keys "0", "1", ..., "n-1" (the lab's ka: "ensure multiple shards").
std::vector<std::string> Keys(int n);

// 6.824's check(): ck.Get(key) must be `value`. False (reported) if not.
bool Check(Clerk& ck, const std::string& key, const std::string& value);
// Check() for every key in order, stopping at the first mismatch.
void CheckAll(Clerk& ck, const std::vector<std::string>& keys,
              const std::vector<std::string>& values);
// Puts every key with `chars` random characters; returns the values (a
// failed Put is reported).
std::vector<std::string> PutAll(Clerk& ck, const std::vector<std::string>& keys, raft::Rng& rng,
                                int chars);

// The shard of `key` in `config` (the real hash, not the lab's key2shard).
uint32_t ShardOf(const ctrl::pb::Config& config, const std::string& key);
// The gid that owns `key`'s shard in `config`.
uint64_t OwnerOf(const ctrl::pb::Config& config, const std::string& key);

// 6.824's ff() goroutines of the concurrent tests: one client per key, each
// appending `chars` random characters to its key and then pausing `pause`,
// until Stop(); an Append adds to (*values)[i] once acknowledged, so that
// the test can check exact values (no lost or duplicated append).
class Appenders {
 public:
  Appenders(Cluster* cluster, const std::vector<std::string>& keys,
            std::vector<std::string>* values, int chars, absl::Duration pause, uint64_t seed);
  ~Appenders();  // Stop()
  Appenders(const Appenders&) = delete;
  Appenders& operator=(const Appenders&) = delete;

  // Ends the loops and waits for the Append each has in flight.
  void Stop();
  // Acknowledged appends so far.
  int64_t appends() const { return appends_.load(); }

 private:
  std::atomic<bool> done_{false};
  std::atomic<int64_t> appends_{0};
  std::vector<std::thread> threads_;
};

}  // namespace ds::shardkv::lab4b
