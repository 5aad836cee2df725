// Options of the pure Raft core. Time is counted in ticks: the driver calls
// Core::Tick() at a fixed period (the Node: every tick_interval; the simulation:
// every virtual tick), so every timeout below is a tick count.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ds::raft {

struct Options {
  // Voters of a brand-new cluster, used only when Storage holds no
  // configuration yet (no snapshot, empty ConfState). Must contain our own id.
  // Default: empty (the configuration comes from storage).
  std::vector<uint64_t> peers;
  // Raft addresses of those peers (id -> HOST:PORT), recorded in that first
  // configuration so that it names every member. The core itself never uses
  // an address. Default: none.
  std::map<uint64_t, std::string> peer_addresses;

  // A learner may be promoted to voter only when its log is at most this many
  // entries behind the leader's commit index (etcd refuses to promote a
  // learner that is not in sync, too). Unit: entries. Default: 1000.
  uint64_t max_learner_lag = 1000;

  // A follower that hears nothing from a leader for a randomized timeout in
  // [election_ticks, 2 * election_ticks) starts an election. Must be larger than
  // heartbeat_ticks (etcd advises 10x). Unit: ticks. Default: 10.
  int election_ticks = 10;
  // A leader sends heartbeats every heartbeat_ticks. Unit: ticks. Default: 1.
  int heartbeat_ticks = 1;

  // PreVote (thesis §9.6): a node first asks whether it could win before
  // bumping its term, so a node rejoining after a partition does not depose a
  // healthy leader. Default: true.
  bool pre_vote = true;
  // CheckQuorum: a leader that has not heard from a quorum within an election
  // timeout steps down, and followers that heard from a leader recently ignore
  // votes (leader stickiness). ReadIndex always confirms leadership with a
  // heartbeat round, so reads stay linearizable without it. Default: true.
  bool check_quorum = true;

  // Flow control per follower in the replicate state: at most max_inflight_msgs
  // MsgApps and max_inflight_bytes of entry payload unacknowledged.
  // Unit: messages / bytes. Defaults: 256 / 32 MiB.
  int max_inflight_msgs = 256;
  uint64_t max_inflight_bytes = 32ull << 20;
  // Upper bound on the entry payload of one MsgApp (at least one entry is always
  // sent, so an oversized entry still goes through). Keeps each message well
  // under gRPC's default 4 MiB limit. Unit: bytes. Default: 1 MiB.
  uint64_t max_size_per_msg_bytes = 1ull << 20;
  // Committed entries returned by one Ready are capped at this payload size
  // (at least one). Unit: bytes. Default: 8 MiB.
  uint64_t max_committed_size_per_ready_bytes = 8ull << 20;

  // Seed of the core's own RNG (randomized election timeouts). Nodes of a
  // cluster should use different seeds. Default: 0 (mixed with the node id).
  uint64_t seed = 0;
};

}  // namespace ds::raft
