#include "kvraft/kv_store.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace ds::kv {

absl::StatusOr<pb::KvResult> KvStore::Execute(const pb::KvCommand& cmd) {
  pb::KvResult result;
  auto it = data_.find(cmd.key());
  switch (cmd.op()) {
    case pb::OP_GET:
      // Only when a read goes through the log; it changes nothing.
      return Get(cmd.key());
    case pb::OP_PUT:
      if (it == data_.end()) {
        data_bytes_ += static_cast<int64_t>(cmd.key().size() + cmd.value().size());
        data_.emplace(cmd.key(), cmd.value());
      } else {
        data_bytes_ +=
            static_cast<int64_t>(cmd.value().size()) - static_cast<int64_t>(it->second.size());
        it->second = cmd.value();
      }
      break;
    case pb::OP_APPEND:
      // 6.824: appending to a missing key acts like Put.
      if (it == data_.end()) {
        data_bytes_ += static_cast<int64_t>(cmd.key().size() + cmd.value().size());
        data_.emplace(cmd.key(), cmd.value());
      } else {
        data_bytes_ += static_cast<int64_t>(cmd.value().size());
        it->second.append(cmd.value());
      }
      break;
    case pb::OP_DELETE:
      if (it != data_.end()) {
        result.set_found(true);
        data_bytes_ -= static_cast<int64_t>(it->first.size() + it->second.size());
        data_.erase(it);
      }
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown operation ", cmd.op()));
  }
  return result;
}

pb::KvResult KvStore::Get(std::string_view key) const {
  pb::KvResult result;
  // Debian's absl::string_view is not std::string_view: convert explicitly.
  auto it = data_.find(absl::string_view(key.data(), key.size()));
  if (it != data_.end()) {
    result.set_found(true);
    result.set_value(it->second);
  }
  return result;
}

void KvStore::SaveTo(google::protobuf::RepeatedPtrField<pb::KvPair>* out) const {
  for (const auto& [key, value] : data_) {
    pb::KvPair* pair = out->Add();
    pair->set_key(key);
    pair->set_value(value);
  }
}

bool KvStore::SaveChunkTo(bool from_start, std::string_view after_key, uint64_t max_bytes,
                          google::protobuf::RepeatedPtrField<pb::KvPair>* out) const {
  auto it = from_start ? data_.begin()
                       : data_.upper_bound(absl::string_view(after_key.data(), after_key.size()));
  uint64_t bytes = 0;
  for (; it != data_.end(); ++it) {
    if (bytes > 0 && bytes + it->first.size() + it->second.size() > max_bytes) return false;
    bytes += it->first.size() + it->second.size();
    pb::KvPair* pair = out->Add();
    pair->set_key(it->first);
    pair->set_value(it->second);
  }
  return true;
}

absl::Status KvStore::LoadFrom(google::protobuf::RepeatedPtrField<pb::KvPair>* pairs) {
  absl::btree_map<std::string, std::string> data;
  int64_t data_bytes = 0;
  for (pb::KvPair& pair : *pairs) {
    data_bytes += static_cast<int64_t>(pair.key().size() + pair.value().size());
    if (!data.emplace(std::move(*pair.mutable_key()), std::move(*pair.mutable_value())).second) {
      return absl::InvalidArgumentError("duplicate key in a snapshot");
    }
  }
  data_ = std::move(data);
  data_bytes_ = data_bytes;
  return absl::OkStatus();
}

void KvStore::Insert(google::protobuf::RepeatedPtrField<pb::KvPair>* pairs) {
  for (pb::KvPair& pair : *pairs) {
    pb::KvCommand put;
    put.set_op(pb::OP_PUT);
    put.set_key(std::move(*pair.mutable_key()));
    put.set_value(std::move(*pair.mutable_value()));
    (void)Execute(put);
  }
}

void KvStore::Clear() {
  data_.clear();
  data_bytes_ = 0;
}

void KvStore::Swap(KvStore& other) {
  data_.swap(other.data_);
  std::swap(data_bytes_, other.data_bytes_);
}

}  // namespace ds::kv
