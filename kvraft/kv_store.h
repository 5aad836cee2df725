// KvStore: one ordered map of keys to values with 6.824's Get/Put/Append/
// Delete semantics. KvStateMachine is one store; shardkv keeps one per shard.
// Pure and deterministic; not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/container/btree_map.h"
#include "absl/status/statusor.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "proto/kv.pb.h"

namespace ds::kv {

class KvStore {
 public:
  // Applies a Put, Append, Delete (or a Get in log form). InvalidArgument (and
  // no change) for OP_UNSPECIFIED or an unknown operation.
  absl::StatusOr<pb::KvResult> Execute(const pb::KvCommand& command);

  // The current value of `key`: found=false and value="" if missing.
  pb::KvResult Get(std::string_view key) const;

  int64_t key_count() const { return static_cast<int64_t>(data_.size()); }
  // Sum of the sizes of all keys and values, in bytes.
  int64_t data_bytes() const { return data_bytes_; }
  bool empty() const { return data_.empty(); }

  // Every pair, sorted by key.
  void SaveTo(google::protobuf::RepeatedPtrField<pb::KvPair>* out) const;
  // The pairs after `after_key` (all of them if `from_start`), in key order,
  // until about `max_bytes` of keys and values (at least one pair if any).
  // Returns true if no pair is left after them.
  bool SaveChunkTo(bool from_start, std::string_view after_key, uint64_t max_bytes,
                   google::protobuf::RepeatedPtrField<pb::KvPair>* out) const;
  // Replaces the contents with `pairs`. InvalidArgument (store unchanged) on a
  // duplicate key.
  absl::Status LoadFrom(google::protobuf::RepeatedPtrField<pb::KvPair>* pairs);
  // Adds `pairs` (later ones win on a duplicate key).
  void Insert(google::protobuf::RepeatedPtrField<pb::KvPair>* pairs);
  // The largest key ("" if empty).
  std::string LastKey() const { return data_.empty() ? "" : data_.rbegin()->first; }
  void Clear();
  void Swap(KvStore& other);

 private:
  absl::btree_map<std::string, std::string> data_;  // sorted: snapshots are stable
  int64_t data_bytes_ = 0;
};

}  // namespace ds::kv
