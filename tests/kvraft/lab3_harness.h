// The harness of the in-process 6.824 lab 3 (KV-Raft) scenarios: a
// ReplicaGroup (tests/rsm/replica_group.h) of KV state machines, whose
// clients are the production KvClient (client/kv_client.h) over an
// in-process transport that runs the server's own request path
// (kv::HandleKvRequest) through the simulated network, recording every
// operation for the linearizability checker.
//
// What the clerks model, after 6.824's kvraft/config.go: a clerk reaches its
// own set of replicas, remembers the leader, retries at another replica on
// "not leader", a timeout or a lost call, gives its writes exactly-once
// semantics with a session that its first write opens, and retries "forever"
// (30 s here, so that a test ends).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/kv_client.h"
#include "kvraft/kv_service.h"
#include "kvraft/kv_state_machine.h"
#include "tests/lincheck/linearizability.h"
#include "tests/rsm/replica_group.h"

namespace ds::kv::lab3 {

using rsm::testing::CurrentTestSeed;
using rsm::testing::TestSeed;

// Replicas, network faults, snapshots, Raft timing, seed: see
// rsm::testing::ReplicaGroupOptions.
using ClusterOptions = rsm::testing::ReplicaGroupOptions;

class Clerk;

class Cluster : public rsm::testing::ReplicaGroup {
 public:
  explicit Cluster(ClusterOptions options);

  // Where clerks record operations. TakeHistory() returns what was recorded
  // and starts a new history; call it only while no clerk is in an operation.
  lincheck::HistoryRecorder& history() { return history_; }
  std::vector<lincheck::Operation> TakeHistory() { return history_.Take(); }

  // A clerk that reaches `servers` (default: all).
  std::unique_ptr<Clerk> MakeClerk(std::vector<int> servers = {});

 private:
  std::atomic<int64_t> next_clerk_label_{1};  // names clerks in histories
  lincheck::HistoryRecorder history_;
};

class Clerk {
 public:
  // Deadline of one attempt at one replica (then try another). Also bounds
  // how long a leader cut off by a partition can hold a call.
  static constexpr absl::Duration kAttemptTimeout = absl::Milliseconds(500);
  // A clerk retries "forever" as in 6.824, but tests must end: an operation
  // that has not completed after this long fails (kDeadlineExceeded).
  static constexpr absl::Duration kGiveUpAfter = absl::Seconds(30);

  // `label` names the clerk in the history.
  Clerk(Cluster* cluster, int64_t label, std::vector<int> servers, uint64_t seed);
  ~Clerk();

  absl::StatusOr<std::string> Get(const std::string& key);
  absl::Status Put(const std::string& key, const std::string& value);
  absl::Status Append(const std::string& key, const std::string& value);

  // Which replicas this clerk's calls can reach (config.go's ConnectClient).
  void ConnectTo(std::vector<int> servers);
  client::SessionState session() const;

 private:
  class Transport;
  Cluster* const cluster_;
  const int64_t label_;
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<client::KvClient> client_;
};

// 6.824's GenericTest
// ---------------------------------------------------------------------------

struct GenericTestOptions {
  int clients = 1;
  int servers = 5;
  bool unreliable = false;
  bool crash = false;       // restart every replica at the end of each iteration
  bool partitions = false;  // repartition the replicas at random while clients run
  int64_t maxraftstate = -1;
  bool randomkeys = false;  // clients share keys and Put too; no value prediction
  // Shortened from 6.824 (3 iterations of 5 s, partitions every 1-1.2 s): the
  // election timeout is 10x shorter here, so the same number of elections
  // and partitions per phase take 10x less time. 1.5 s phases still give
  // each client hundreds of operations per iteration (thousands on a
  // reliable network).
  int iterations = 3;
  absl::Duration phase = absl::Milliseconds(1500);
  // Beyond 6.824: while the clients run, crash one random replica every
  // this often and restart it 100 ms later. Zero: never.
  absl::Duration crash_one_every = absl::ZeroDuration();
  // Beyond 6.824: duplicated Raft messages (unreliable only), per mille.
  uint64_t duplicate_per_mille = 0;
  // *Linearizable tests: a checker timeout is a failure, not a pass.
  bool require_linearizability_verdict = false;
};

// Runs the scenario; failures are reported through gtest.
void GenericTest(const GenericTestOptions& options, uint64_t seed);

// GenericTestSpeed: 1000 sequential Appends at 3 replicas must average at
// most a third of a heartbeat interval each.
void GenericTestSpeed(int64_t maxraftstate, uint64_t seed);

// checkClntAppends: each "x <client> <j> y" for j < count appears exactly
// once in `value`, in order of j. Empty string if so, else what is wrong.
std::string CheckClientAppends(int client, const std::string& value, int count);

// Porcupine's check as 6.824 does it: kIllegal fails the test; kUnknown (the
// budget ran out) passes, as in 6.824, unless `require_verdict`. The checker
// interns every register state, and Append histories make ever-longer states,
// so its cost grows with (operations per key)^2: keep histories short.
void CheckHistory(const std::vector<lincheck::Operation>& ops, bool require_verdict,
                  absl::Duration budget);

}  // namespace ds::kv::lab3
