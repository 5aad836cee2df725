// The sharded key/value state machine of one replica group (6.824 lab 4B with
// both challenges). Exactly-once is the session layer's
// (rsm::SessionStateMachine); this holds, per shard of the current
// configuration, its state and its data:
//
//   serving      this group's: answers requests
//   pulling      gained in the current configuration from another group,
//                waiting for the data; installed through the log in chunks
//                (InstallChunk...), then InstallDone merges the previous
//                owner's sessions and the shard serves at once, before other
//                shards arrive (challenge 2)
//   handing-off  lost in the current configuration: kept, frozen, until the
//                new owner has installed it and asks for it to be deleted
//                (DeleteShardCommand: garbage collection, challenge 1)
//   gc-pending   serving, gained in the current configuration; the previous
//                owner has not confirmed deleting its copy yet (HandoffDone)
//   not-owned    nothing kept
//
// The group moves through configurations one number at a time, through its
// own log (ConfigCommand), and only once every shard is serving or not owned:
// the change to the current configuration is finished. A shard gained from
// gid 0 (unassigned) starts empty and serving. Shards a change does not touch
// keep serving throughout.
//
// Requests are checked against the shard's state when they are applied
// (writes) or at the read point (reads): a key of a shard that is not serving
// here is refused with FAILED_PRECONDITION ("wrong group"), which the session
// layer does not record, so the client can send the same command to the right
// group. Every internal command carries its configuration number and is
// idempotent: stale, duplicated and replayed ones change nothing.
//
// The shards' keys live in the rsm::AppState the session layer attaches (in
// memory, or RocksDB in shardkv-server): shard S's key K is "d" + S (4 bytes,
// big-endian) + K, so one shard is one key range: migration reads it in
// chunks, garbage collection deletes the range. A pulled shard's chunks are
// written straight into its range (it is not served until InstallDone). The
// configurations and shard states (a few KB) are kept in memory and written
// under "M" with each batch.
//
// Deterministic; not thread-safe except view(), which the driver and Status
// read from other threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "proto/rsm.pb.h"
#include "proto/shardkv.pb.h"
#include "raft/rsm/app_state.h"
#include "raft/rsm/session_state_machine.h"

namespace ds::shardkv {

const char* StateName(pb::ShardState state);

class ShardKvStateMachine final : public rsm::Application {
 public:
  explicit ShardKvStateMachine(uint64_t gid);

  // `command` is a serialized pb::ShardKvCommand. A KV command's result is a
  // serialized kv::pb::KvResult; internal commands return "" and are ignored
  // when stale. Errors change nothing: kFailedPrecondition for a key of a
  // shard not served here, kInvalidArgument for malformed commands.
  absl::StatusOr<std::string> Apply(std::string_view command,
                                    const rsm::ApplyContext& context) override;
  // pb::ShardKvSnapshot with every shard's pairs (the in-memory form; a
  // shard being pulled has its pairs as `staged`).
  void SnapshotTo(std::string* out) const override;
  absl::Status Restore(std::string_view snapshot) override;
  bool data_in_app_state() const override { return true; }
  void Attach(rsm::AppState* state) override;
  void SaveToState() override;

  // A read at the read point: the key's value, or kFailedPrecondition if its
  // shard is not served here.
  absl::StatusOr<kv::pb::KvResult> Get(std::string_view key) const;

  // A chunk of a shard being handed off, for the new owner's pull (the data
  // is frozen, so chunks read at different times are consistent). `sessions`:
  // this group's sessions, sent with the last chunk. kUnavailable if this
  // group has not applied `config_num` yet; kFailedPrecondition if the shard
  // is not handed off at `config_num` (already deleted, or never this
  // group's).
  absl::StatusOr<pb::PullShardResponse> Pull(const pb::PullShardRequest& request,
                                             const rsm::SessionTable& sessions) const;

  // What the driver (configuration changes, pulls, garbage collection) and
  // Status need, as of the last applied entry. Thread-safe.
  struct View {
    uint64_t gid = 0;
    ctrl::pb::Config current;  // num 0: no configuration yet
    ctrl::pb::Config previous;
    std::vector<pb::ShardState> states;   // per shard of `current`
    std::vector<uint64_t> staged_chunks;  // pulling shards: chunks staged
    std::vector<std::string> last_staged_key;
    // Keys held per shard (read when the view is taken, so current).
    std::vector<uint64_t> keys;
    // Every shard serving or not owned: the current change is finished.
    bool settled() const;
  };
  View view() const ABSL_LOCKS_EXCLUDED(view_mu_);

  uint64_t gid() const { return gid_; }

 private:
  struct Shard {
    pb::ShardState state = pb::SHARD_NOT_OWNED;
    // Keys held, readable from any thread (for Status).
    std::shared_ptr<std::atomic<uint64_t>> keys = std::make_shared<std::atomic<uint64_t>>(0);
    uint64_t key_count = 0;
    uint64_t staged_chunks = 0;
    std::string last_staged_key;
  };

  absl::StatusOr<std::string> ApplyKv(const kv::pb::KvCommand& cmd);
  absl::Status ApplyConfig(const ctrl::pb::Config& config);
  void ApplyInstallChunk(pb::InstallChunk& chunk);
  void ApplyInstallDone(const pb::InstallDone& done, const rsm::ApplyContext& context);
  void ApplyDeleteShard(const pb::DeleteShardCommand& del);
  void ApplyHandoffDone(const pb::HandoffDone& done);
  // The shard of `key` if it is served here, else the wrong-group error.
  absl::StatusOr<uint32_t> ServingShard(std::string_view key) const;
  bool SettledLocked() const;
  void PublishView() ABSL_LOCKS_EXCLUDED(view_mu_);
  // Removes every key of shard `s`.
  void ClearShard(uint32_t s);
  // Configurations and shard states, without the pairs (the "M" record).
  pb::ShardKvSnapshot Meta() const;
  // Checks `snap` against this group; nothing changes.
  absl::Status Check(const pb::ShardKvSnapshot& snap) const;
  void LoadMeta(pb::ShardKvSnapshot& snap);

  const uint64_t gid_;
  rsm::MemoryAppState own_;  // until the session layer attaches one
  rsm::AppState* state_ = &own_;
  ctrl::pb::Config current_;
  ctrl::pb::Config previous_;
  std::vector<Shard> shards_;  // one per shard of current_

  mutable absl::Mutex view_mu_;
  View view_ ABSL_GUARDED_BY(view_mu_);
  std::vector<std::shared_ptr<std::atomic<uint64_t>>> key_counts_ ABSL_GUARDED_BY(view_mu_);
};

}  // namespace ds::shardkv
