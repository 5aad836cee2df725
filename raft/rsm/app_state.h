// AppState: the ordered key/value map an application keeps its data in, when
// it keeps it outside its own memory (kvraft does). Two implementations:
//   - MemoryAppState (here): a sorted map in memory, saved whole into the
//     snapshot (tests, the simulation, and the in-memory server mode);
//   - DiskState's (raft/rsm/disk_state.h): RocksDB, where the state lives on
//     disk, a snapshot is a checkpoint and memory is bounded by flags.
// The application sees the same interface either way. Writes made while a
// batch of log entries is applied become visible to the application's own
// Get/Scan at once, and to everyone else once the batch ends
// (SessionStateMachine::FinishBatch). Storage errors are not returned: a
// replica that cannot read or write its state stops (fail-stop, logged).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/btree_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "proto/kv.pb.h"

namespace ds::rsm {

class AppState {
 public:
  virtual ~AppState() = default;
  // The value of `key`, or nullopt if it has none.
  virtual std::optional<std::string> Get(std::string_view key) const = 0;
  virtual void Put(std::string_view key, std::string_view value) = 0;
  virtual void Delete(std::string_view key) = 0;
  // Deletes every key in [begin, end); an empty `end` means "to the last key".
  virtual void DeleteRange(std::string_view begin, std::string_view end) = 0;
  // Visits the pairs with begin <= key < end (empty `end`: to the last key),
  // in key order, while `visit` returns true.
  using Visitor = absl::FunctionRef<bool(std::string_view key, std::string_view value)>;
  virtual void Scan(std::string_view begin, std::string_view end, Visitor visit) const = 0;
};

class MemoryAppState final : public AppState {
 public:
  std::optional<std::string> Get(std::string_view key) const override;
  void Put(std::string_view key, std::string_view value) override;
  void Delete(std::string_view key) override;
  void DeleteRange(std::string_view begin, std::string_view end) override;
  void Scan(std::string_view begin, std::string_view end, Visitor visit) const override;

  int64_t key_count() const { return static_cast<int64_t>(data_.size()); }
  // Sum of the sizes of every key and value, in bytes.
  int64_t data_bytes() const { return data_bytes_; }

 private:
  absl::btree_map<std::string, std::string, std::less<>> data_;
  int64_t data_bytes_ = 0;
};

// Every pair of `state`, in key order, as KvPairs (the in-memory snapshot
// format of kvraft, unchanged since before state moved to disk).
void SavePairs(const AppState& state, google::protobuf::RepeatedPtrField<kv::pb::KvPair>* out);
// Replaces every pair of `state` with `pairs` (sorted, no duplicates:
// InvalidArgument and no change otherwise).
absl::Status LoadPairs(const google::protobuf::RepeatedPtrField<kv::pb::KvPair>& pairs,
                       AppState* state);

}  // namespace ds::rsm
