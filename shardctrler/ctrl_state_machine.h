// The shard controller's state machine: the numbered, immutable
// configurations of MIT 6.824 lab 4A. Exactly-once is not its business: it
// runs under rsm::SessionStateMachine (raft/rsm/session_state_machine.h),
// which hands it only commands that are new.
//
// Join, Leave and Move each make configuration latest + 1 from the latest one;
// every configuration is kept and never changes. Join and Leave rebalance
// (shardctrler/rebalance.h); Move assigns one shard and leaves the rest alone,
// so its result is unbalanced until the next Join or Leave. Servers replaces
// one group's server list (its Raft membership changed) and keeps every
// shard where it is; a list equal to the current one makes nothing, so that a
// group leader's retry, or two leaders of one group sending the same list,
// add no configuration.
//
// The shard count. Configuration 0 exists from the start (no groups, every
// shard on gid 0) with CtrlStateMachineOptions::shard_count shards. Every
// config-making command carries the proposer's count (CtrlCommand.shard_count);
// the first one fixes the count for good (configuration 0's shard list is
// re-made with that count if it differs), later ones must match it or fail
// with kFailedPrecondition on every replica alike. A snapshot stores the count
// and Restore() adopts it whatever the options said, so that a restarted
// server can compare it with its flag: after the Rsm has restored the state,
// the server calls CheckShardCount(--shards) and refuses to start on an error
// (the message names both counts). Only a snapshot is checked at start-up; a
// log replayed without one cannot do harm either, because the count it applies
// with comes from the log.
//
// Pure and deterministic: no threads, no clock, no I/O. Not thread-safe
// except latest_num(): the Rsm applies from one thread and serializes reads
// (rsm::ReadAsync) against it.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/shardctrler.pb.h"
#include "raft/rsm/session_state_machine.h"

namespace ds::ctrl {

// Lab 4A's NShards.
inline constexpr int kDefaultShardCount = 10;
// Upper bound on the shard count (every configuration stores one gid per
// shard, and every configuration is kept).
inline constexpr int kMaxShardCount = 1 << 16;

// OK for 1 <= shard_count <= kMaxShardCount, else kInvalidArgument (for
// validating --shards before constructing the state machine).
absl::Status ValidateShardCount(int64_t shard_count);

struct CtrlStateMachineOptions {
  // Shards per configuration until the first configuration fixes the count
  // (see the file comment); the servers pass --shards. Must satisfy
  // ValidateShardCount (a value outside the range is clamped into it).
  // Default: 10.
  int shard_count = kDefaultShardCount;
};

class CtrlStateMachine final : public rsm::Application {
 public:
  explicit CtrlStateMachine(CtrlStateMachineOptions options = {});

  // `command` is a serialized pb::CtrlCommand; the result a serialized
  // pb::CtrlResult. Errors change nothing: kInvalidArgument for bytes that are
  // not a CtrlCommand, no operation, or bad input (see pb::JoinCommand,
  // LeaveCommand, MoveCommand, ServersCommand); kFailedPrecondition for a shard count other
  // than the fixed one.
  absl::StatusOr<std::string> Apply(std::string_view command,
                                    const rsm::ApplyContext& context) override;
  // pb::CtrlSnapshot: the shard count and every configuration. Equal states
  // give equal bytes.
  void SnapshotTo(std::string* out) const override;
  // Adopts the snapshot's shard count and history. kInvalidArgument (state
  // unchanged) for bytes that are not a consistent CtrlSnapshot.
  absl::Status Restore(std::string_view snapshot) override;

  // The same command on a bare state machine, for tests: the parsed result.
  absl::StatusOr<pb::CtrlResult> Execute(const pb::CtrlCommand& command);

  // Configuration `num`; num < 0 or past the latest: the latest. The reference
  // is valid until the next Apply or Restore (a ReadAsync query copies it).
  const pb::Config& Query(int64_t num) const;
  const pb::Config& latest() const { return configs_.back(); }
  // The latest configuration's number; safe to call from any thread (a
  // cheap hint, e.g. for status; Query/Latest RPCs read it through ReadAsync).
  uint64_t latest_num() const { return latest_num_.load(std::memory_order_acquire); }

  // Shards per configuration: the fixed count once latest_num() > 0, or the
  // count a restored snapshot holds.
  int shard_count() const { return shard_count_; }
  // True once the first configuration is made (the count can no longer change).
  bool shard_count_fixed() const { return configs_.size() > 1; }
  // What a server checks after its state was restored: OK if the count is not
  // fixed yet or equals `flag_shard_count`; otherwise kFailedPrecondition with
  // a message naming both counts.
  absl::Status CheckShardCount(int64_t flag_shard_count) const;

 private:
  // `shard_count`: the command's (already checked).
  absl::StatusOr<pb::CtrlResult> Join(const pb::JoinCommand& join, int shard_count);
  absl::StatusOr<pb::CtrlResult> Leave(const pb::LeaveCommand& leave);
  absl::StatusOr<pb::CtrlResult> Move(const pb::MoveCommand& move);
  absl::StatusOr<pb::CtrlResult> Servers(const pb::ServersCommand& servers);
  // A command's shard count: in range, and the fixed one once fixed.
  absl::Status CheckCommandShardCount(uint32_t shard_count) const;
  // Before configuration 1: makes `shard_count` the count (re-making
  // configuration 0 with it). Afterwards: nothing.
  void FixShardCount(int shard_count);
  // Appends `config` (numbered latest + 1) to the history.
  pb::CtrlResult Commit(pb::Config config);

  int shard_count_;
  std::vector<pb::Config> configs_;  // configs_[i].num == i; never empty
  std::atomic<uint64_t> latest_num_{0};
};

}  // namespace ds::ctrl
