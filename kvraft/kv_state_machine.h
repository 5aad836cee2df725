// The key/value state machine replicated by kvraft: Get/Put/Append/Delete with
// the semantics of MIT 6.824 lab 3. Exactly-once is not its business: it runs
// under rsm::SessionStateMachine (raft/rsm/session_state_machine.h), which
// hands it only commands that are new.
//
// Its keys and values live in the rsm::AppState the session layer attaches:
// in memory (tests, simulation) or in RocksDB (kvraft-server), each client key
// stored under itself. Deterministic: the result of Apply() and the pairs it
// leaves depend only on the sequence of applied commands, so all replicas
// agree. Not thread-safe: the RSM layer applies entries from one thread and
// serializes reads against it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/kv.pb.h"
#include "raft/rsm/app_state.h"
#include "raft/rsm/session_state_machine.h"

namespace ds::kv {

// 6.824's Get/Put/Append/Delete of `cmd` on the keys of `state` stored under
// `prefix` + key (kvraft: no prefix; shardkv: the shard's). `key_delta` (if
// not null) gets the keys created minus the keys deleted. InvalidArgument
// (and no change) for OP_UNSPECIFIED or an unknown operation.
absl::StatusOr<pb::KvResult> ExecuteOn(rsm::AppState& state, std::string_view prefix,
                                       const pb::KvCommand& cmd, int64_t* key_delta = nullptr);
// The value of `prefix` + `key`: found=false and value="" if missing.
pb::KvResult GetFrom(const rsm::AppState& state, std::string_view prefix, std::string_view key);

class KvStateMachine final : public rsm::Application {
 public:
  // Uses a state of its own in memory until a SessionStateMachine attaches
  // one.
  KvStateMachine() : state_(&own_) {}

  // `command` is a serialized pb::KvCommand; the result a serialized
  // pb::KvResult. InvalidArgument (and no change) for anything else or
  // OP_UNSPECIFIED.
  absl::StatusOr<std::string> Apply(std::string_view command,
                                    const rsm::ApplyContext& context) override;
  // pb::KvSnapshot: every pair, sorted by key (the in-memory snapshot form).
  void SnapshotTo(std::string* out) const override;
  // InvalidArgument (state unchanged) for bytes that are not a KvSnapshot or
  // whose keys are not sorted and unique.
  absl::Status Restore(std::string_view snapshot) override;
  bool data_in_app_state() const override { return true; }
  void Attach(rsm::AppState* state) override { state_ = state; }

  // The same command on a bare state machine, for tests: the parsed result.
  absl::StatusOr<pb::KvResult> Execute(const pb::KvCommand& command);

  // The current value of `key`, for reads served through ReadIndex (the caller
  // makes sure the read index is applied). found=false and value="" for a
  // missing key.
  pb::KvResult Get(std::string_view key) const;

  const rsm::AppState& state() const { return *state_; }

 private:
  rsm::MemoryAppState own_;
  rsm::AppState* state_;
};

}  // namespace ds::kv
