// The key/value state machine replicated by kvraft: Get/Put/Append/Delete with
// the semantics of MIT 6.824 lab 3, exactly-once through client sessions that
// clients open with OP_REGISTER (Raft thesis §6.3).
//
// Pure and deterministic: no threads, no clock, no I/O. The result of Apply()
// and the bytes of Snapshot() depend only on the sequence of applied commands, so
// all replicas agree. Not thread-safe: the RSM layer applies entries from one
// thread and serializes reads against it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvraft/session_table.h"
#include "proto/kv.pb.h"

namespace ds::kv {

struct KvStateMachineOptions {
  // Session expiry and bound. Every replica of a group MUST use the same values:
  // they decide which retried commands are refused, which is replicated state.
  SessionTableOptions sessions;
};

class KvStateMachine {
 public:
  explicit KvStateMachine(KvStateMachineOptions options = {});

  // Applies the committed log entry at `index` whose data is `command` (a
  // serialized pb::KvCommand). Indexes must increase; an entry at or below
  // applied_index() is refused with FailedPrecondition and changes nothing (for
  // example an entry replayed after a snapshot that already covers it).
  //
  // Any other entry advances applied_index(), even when the command itself fails,
  // because every replica fails it the same way:
  // - an empty entry (the leader's no-op at the start of its term, Raft §8) only
  //   advances the index and returns an empty result;
  // - OP_REGISTER opens a session whose id is `index` (unique, and the same on
  //   every replica), returned in KvResult.client_id;
  // - InvalidArgument: not a KvCommand, OP_UNSPECIFIED, or a write with a
  //   client_id but no sequence;
  // - FailedPrecondition: the client has no session (never registered, or its
  //   session expired or was evicted; see SessionTable);
  // - AlreadyExists: an older command of the client than its latest (the client
  //   has already been answered; nothing waits for this result).
  // A retried write that was already applied returns the original result.
  absl::StatusOr<pb::KvResult> Apply(std::string_view command, uint64_t index);

  // The current value of `key`, for reads served through ReadIndex (the caller
  // makes sure applied_index() has reached the read index). found=false and
  // value="" for a missing key.
  pb::KvResult Get(std::string_view key) const;

  uint64_t applied_index() const { return applied_index_; }
  // The logical clock: the largest proposal time among the applied commands.
  int64_t clock_unix_micros() const { return clock_unix_micros_; }
  int64_t key_count() const { return static_cast<int64_t>(data_.size()); }
  // Sum of the sizes of all keys and values, in bytes.
  int64_t data_bytes() const { return data_bytes_; }
  int64_t session_count() const { return sessions_.size(); }

  // The whole state (data, sessions, clock, applied index) as a serialized
  // pb::KvSnapshot. Equal states give equal bytes.
  std::string Snapshot() const;

  // Replaces the whole state with a Snapshot(). On error (InvalidArgument: not a
  // snapshot, or duplicate keys) the state is unchanged.
  absl::Status Restore(std::string_view snapshot);

 private:
  pb::KvResult Execute(const pb::KvCommand& command);

  KvStateMachineOptions options_;
  absl::btree_map<std::string, std::string> data_;  // sorted: snapshots are stable
  int64_t data_bytes_ = 0;
  SessionTable sessions_;
  uint64_t applied_index_ = 0;
  int64_t clock_unix_micros_ = 0;
};

}  // namespace ds::kv
