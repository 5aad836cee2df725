// DiskState: a replicated state machine's state kept in RocksDB, so that its
// size is bounded by the disk, not by memory, a snapshot costs the same at
// 4 GB as when empty, and a restart does not reload the dataset.
//
// Layout, under one directory (the replica servers use DATA_DIR/state):
//   CURRENT_DB            names the live database directory (written durably:
//                         temp file, fsync, rename)
//   db-N/                 the live RocksDB: keys "a"+KEY are the application's
//                         (AppState), "m"+KEY the session layer's (applied
//                         index, clock, sessions)
//   snapshots/NAME/       checkpoints (hard links of the live SST files plus
//                         copies of the small ones), NAME = ckpt-INDEX-ID
//   snapshots/NAME.partial/  a checkpoint being received from a peer
//
// Writes collect in one pending batch (the application sees its own writes
// at once) and reach RocksDB together in Commit(): the effects of a batch of
// log entries, the sessions they touched and the applied index land
// atomically. Commit does not fsync: the Raft log is the durable record, and
// after a crash the replica replays the log from the applied index it finds
// here. A checkpoint is the committed state at its applied index; the
// replica's Raft snapshot names it, and the log is compacted up to it.
//
// Restoring a checkpoint builds a new live directory from it (hard links),
// switches CURRENT_DB to it and only then drops the old one: a crash at any
// point leaves either the old state or the new one, never a mix.
//
// Not thread-safe: one thread applies, and reads are serialized against it
// (the Rsm's lock).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/rsm.pb.h"
#include "raft/rsm/app_state.h"

namespace rocksdb {
class Cache;
class DB;
class WriteBatchWithIndex;
}  // namespace rocksdb

namespace ds::rsm {

struct DiskStateOptions {
  // The directory (created if missing). Required.
  std::string dir;
  // RocksDB's block cache, which also holds the index and filter blocks, so
  // it bounds what reads keep in memory. Unit: bytes. Default: 64 MiB.
  uint64_t block_cache_bytes = 64ull << 20;
  // One memtable; RocksDB keeps up to two per column family before it must
  // flush. Unit: bytes. Default: 32 MiB.
  uint64_t memtable_bytes = 32ull << 20;
  // Compression of the SST files: "none", "snappy", "lz4" or "zstd". Every
  // byte is compressed again at each compaction: on 2 cores with data that
  // does not compress (random bytes, already compressed) "none" saves CPU.
  // Default: "snappy" (RocksDB's).
  std::string compression = "snappy";
  // Called at each step of Checkpoint and Restore where a crash leaves a
  // different picture on disk (kFailPoints), for crash tests: a test process
  // kills itself there. Default: none.
  std::function<void(std::string_view step)> fail_point;
};

// The steps DiskStateOptions::fail_point names, in the order they happen:
// "checkpoint:begin" (batch committed), "checkpoint:created" (RocksDB's
// checkpoint directory complete, not yet synced), "checkpoint:synced" (its
// manifest about to be returned: the Raft snapshot does not name it yet);
// "restore:copied" (new live directory filled under a .tmp name),
// "restore:renamed", "restore:opened" (new database open with its new
// identity, CURRENT_DB still names the old one), "restore:switched"
// (CURRENT_DB names the new one; the old directory not yet removed).
inline constexpr std::string_view kFailPoints[] = {
    "checkpoint:begin", "checkpoint:created", "checkpoint:synced", "restore:copied",
    "restore:renamed",  "restore:opened",     "restore:switched"};

// The compression names DiskStateOptions::compression accepts.
bool IsCompressionName(const std::string& name);

// The Raft snapshot data of a checkpoint: "DSCKPT01" + the manifest.
std::string EncodeManifest(const pb::CheckpointManifest& manifest);
// The manifest if `data` is a checkpoint's; nullopt for any other snapshot
// data (the in-memory format); kDataLoss if it has the prefix but no manifest.
absl::StatusOr<std::optional<pb::CheckpointManifest>> DecodeManifest(std::string_view data);
// Whether a checkpoint or file name is safe to use as a path component.
bool IsPlainName(std::string_view name);

class DiskState {
 public:
  static absl::StatusOr<std::unique_ptr<DiskState>> Open(DiskStateOptions options);
  ~DiskState();
  DiskState(const DiskState&) = delete;
  DiskState& operator=(const DiskState&) = delete;

  // The application's keys.
  AppState* app();
  const AppState* app() const;

  // The session layer's keys, through the same batch.
  std::optional<std::string> GetMeta(std::string_view key) const;
  void PutMeta(std::string_view key, std::string_view value);
  void DeleteMeta(std::string_view key);
  void ScanMeta(std::string_view prefix, AppState::Visitor visit) const;

  // Writes the pending batch to RocksDB (no fsync). A failure stops the
  // process: the state would no longer follow the log.
  void Commit();

  // A checkpoint of the committed state, which must be at `applied_index`
  // (Commit first): snapshots/ckpt-INDEX-ID, and its manifest. Cost: hard
  // links plus a copy of the write-ahead log since the last flush (bounded by
  // the memtables), independent of the data size.
  absl::StatusOr<pb::CheckpointManifest> Checkpoint(uint64_t applied_index);

  // Replaces the live state with the complete checkpoint snapshots/NAME
  // (taken here or received whole from a peer). On error the old state stays
  // live. Drops the pending batch.
  absl::Status Restore(const pb::CheckpointManifest& manifest);

  // Removes checkpoints with an applied index below `index` and partial
  // downloads of checkpoints at or below it (the one at `index` and newer
  // stay: a follower may be fetching them).
  void DropCheckpointsBefore(uint64_t index);

  // snapshots/ (where checkpoints are taken and received).
  std::string snapshots_dir() const;
  // Random id of the live database, new at each Open of a fresh directory and
  // each Restore: names its checkpoints, so that two replicas' files never
  // share a name.
  uint64_t id() const { return id_; }
  // Bytes of SST files and memtables (RocksDB's estimates), and keys.
  uint64_t ApproximateBytes() const;
  uint64_t ApproximateKeys() const;

 private:
  class BatchedState;
  explicit DiskState(DiskStateOptions options);
  absl::Status OpenLive(const std::string& name);
  void CloseLive();
  std::string Path(std::string_view name) const;
  [[noreturn]] void Fail(const std::string& what, const std::string& why) const;
  void Step(std::string_view step) const;

  const DiskStateOptions options_;
  std::shared_ptr<rocksdb::Cache> cache_;
  std::string live_;  // the live directory's name
  rocksdb::DB* db_ = nullptr;
  std::unique_ptr<rocksdb::WriteBatchWithIndex> batch_;
  // Range deletions of the pending batch, [from, to) in full keys: written
  // before the batch's other operations at Commit.
  std::vector<std::pair<std::string, std::string>> range_deletes_;
  std::unique_ptr<BatchedState> app_;
  std::unique_ptr<BatchedState> meta_;
  uint64_t id_ = 0;
  uint64_t next_live_ = 1;
};

}  // namespace ds::rsm
