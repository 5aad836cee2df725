// The key/value state machine replicated by kvraft: Get/Put/Append/Delete with
// the semantics of MIT 6.824 lab 3. Exactly-once is not its business: it runs
// under rsm::SessionStateMachine (raft/rsm/session_state_machine.h), which
// hands it only commands that are new.
//
// Pure and deterministic: no threads, no clock, no I/O. The result of Apply()
// and the bytes of SnapshotTo() depend only on the sequence of applied
// commands, so all replicas agree. Not thread-safe: the RSM layer applies
// entries from one thread and serializes reads against it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvraft/kv_store.h"
#include "proto/kv.pb.h"
#include "raft/rsm/session_state_machine.h"

namespace ds::kv {

class KvStateMachine final : public rsm::Application {
 public:
  // `command` is a serialized pb::KvCommand; the result a serialized
  // pb::KvResult. InvalidArgument (and no change) for anything else or
  // OP_UNSPECIFIED.
  absl::StatusOr<std::string> Apply(std::string_view command,
                                    const rsm::ApplyContext& context) override;
  // pb::KvSnapshot: every pair, sorted by key.
  void SnapshotTo(std::string* out) const override;
  // InvalidArgument (state unchanged) for bytes that are not a KvSnapshot or
  // hold a duplicate key.
  absl::Status Restore(std::string_view snapshot) override;

  // The same command on a bare state machine, for tests: the parsed result.
  absl::StatusOr<pb::KvResult> Execute(const pb::KvCommand& command);

  // The current value of `key`, for reads served through ReadIndex (the caller
  // makes sure the read index is applied). found=false and value="" for a
  // missing key.
  pb::KvResult Get(std::string_view key) const;

  int64_t key_count() const { return store_.key_count(); }
  // Sum of the sizes of all keys and values, in bytes.
  int64_t data_bytes() const { return store_.data_bytes(); }

 private:
  KvStore store_;
};

}  // namespace ds::kv
