// Network: the fault-injecting in-memory network of the in-process replica
// group tests (tests/rsm/replica_group.h), after 6.824's labrpc. It carries
// the Raft messages between replicas (a raft::Transport per replica
// incarnation) and models the legs of the clients' calls:
//   - partitions: arbitrary groups of replicas (a replica in no group is
//     isolated); a client has its own set of replicas it can reach
//     (ReplicaGroup's ClientLink);
//   - "unreliable" mode: each message or call leg is lost with probability
//     10% and delayed uniformly in [0, 27 ms] (which also reorders them), and
//     optionally Raft messages are duplicated.
// Seeded (raft::Rng); threads and the real clock make runs differ anyway.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <queue>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/raft.pb.h"
#include "raft/core/rng.h"
#include "raft/transport/transport.h"

namespace ds::rsm::testing {

class Network {
 public:
  explicit Network(uint64_t seed);
  ~Network();
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  // The Transport of one incarnation of replica `id`.
  std::unique_ptr<raft::Transport> NewTransport(uint64_t id);

  void SetReliable(bool reliable) ABSL_LOCKS_EXCLUDED(mu_);
  // In unreliable mode, also deliver this fraction of the Raft messages twice
  // (each copy with its own delay). labrpc never duplicates. Unit: 1/1000.
  void SetDuplicatePerMille(uint64_t per_mille) ABSL_LOCKS_EXCLUDED(mu_);

  // Replicas in the same group reach each other; replicas in no group are
  // isolated. Replaces the previous partition.
  void Partition(const std::vector<std::vector<uint64_t>>& groups) ABSL_LOCKS_EXCLUDED(mu_);
  void ConnectAll() ABSL_LOCKS_EXCLUDED(mu_);

  // One leg of a clerk's call (request or reply): lost or not, and its delay.
  struct Leg {
    bool lost = false;
    absl::Duration delay;
  };
  Leg ClientLeg() ABSL_LOCKS_EXCLUDED(mu_);

  // Raft messages delivered / lost (partition, loss, replica down), and how
  // many of the delivered ones were InstallSnapshot (MSG_SNAP).
  uint64_t delivered() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t dropped() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t snapshots_delivered() const ABSL_LOCKS_EXCLUDED(mu_);

  // Probability of loss and the largest delay in unreliable mode (labrpc's).
  static constexpr uint64_t kLossPerMille = 100;
  static constexpr absl::Duration kMaxDelay = absl::Milliseconds(27);

 private:
  class Endpoint;
  class MemTransport;
  struct InFlight {
    absl::Time deliver_at;
    uint64_t seq;
    raft::pb::Message message;
    bool operator>(const InFlight& o) const {
      return deliver_at != o.deliver_at ? deliver_at > o.deliver_at : seq > o.seq;
    }
  };

  void Register(uint64_t id, std::shared_ptr<Endpoint> ep) ABSL_LOCKS_EXCLUDED(mu_);
  void Unregister(uint64_t id, const Endpoint* ep) ABSL_LOCKS_EXCLUDED(mu_);
  void Send(uint64_t from, std::vector<raft::pb::Message> messages) ABSL_LOCKS_EXCLUDED(mu_);
  // Queues a report (MSG_UNREACHABLE / MSG_SNAP_STATUS) for `m`'s sender.
  void ReportLocked(const raft::pb::Message& m, raft::pb::MessageType type, bool reject,
                    absl::Time at) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EnqueueLocked(raft::pb::Message m, absl::Time at) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ConnectedLocked(uint64_t a, uint64_t b) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Duration DelayLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Dispatch();

  mutable absl::Mutex mu_;
  raft::Rng rng_ ABSL_GUARDED_BY(mu_);
  bool reliable_ ABSL_GUARDED_BY(mu_) = true;
  uint64_t duplicate_per_mille_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // While partitioned_: replica id -> group (absent: isolated).
  bool partitioned_ ABSL_GUARDED_BY(mu_) = false;
  std::map<uint64_t, int> group_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::shared_ptr<Endpoint>> endpoints_ ABSL_GUARDED_BY(mu_);
  std::priority_queue<InFlight, std::vector<InFlight>, std::greater<>> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t delivered_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t snapshots_delivered_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread dispatcher_;
};

}  // namespace ds::rsm::testing
