#include "raft/rsm/app_state.h"

#include "absl/strings/str_cat.h"

namespace ds::rsm {

std::optional<std::string> MemoryAppState::Get(std::string_view key) const {
  auto it = data_.find(key);
  if (it == data_.end()) return std::nullopt;
  return it->second;
}

void MemoryAppState::Put(std::string_view key, std::string_view value) {
  auto it = data_.find(key);
  if (it == data_.end()) {
    data_bytes_ += static_cast<int64_t>(key.size() + value.size());
    data_.emplace(std::string(key), std::string(value));
  } else {
    data_bytes_ += static_cast<int64_t>(value.size()) - static_cast<int64_t>(it->second.size());
    it->second.assign(value.data(), value.size());
  }
}

void MemoryAppState::Delete(std::string_view key) {
  auto it = data_.find(key);
  if (it == data_.end()) return;
  data_bytes_ -= static_cast<int64_t>(it->first.size() + it->second.size());
  data_.erase(it);
}

void MemoryAppState::DeleteRange(std::string_view begin, std::string_view end) {
  auto lo = data_.lower_bound(begin);
  auto hi = end.empty() ? data_.end() : data_.lower_bound(end);
  for (auto it = lo; it != hi; ++it) {
    data_bytes_ -= static_cast<int64_t>(it->first.size() + it->second.size());
  }
  data_.erase(lo, hi);
}

void MemoryAppState::Scan(std::string_view begin, std::string_view end, Visitor visit) const {
  for (auto it = data_.lower_bound(begin); it != data_.end(); ++it) {
    if (!end.empty() && it->first >= end) break;
    if (!visit(it->first, it->second)) break;
  }
}

void SavePairs(const AppState& state, google::protobuf::RepeatedPtrField<kv::pb::KvPair>* out) {
  state.Scan("", "", [out](std::string_view key, std::string_view value) {
    kv::pb::KvPair* pair = out->Add();
    pair->set_key(key.data(), key.size());
    pair->set_value(value.data(), value.size());
    return true;
  });
}

absl::Status LoadPairs(const google::protobuf::RepeatedPtrField<kv::pb::KvPair>& pairs,
                       AppState* state) {
  for (int i = 1; i < pairs.size(); ++i) {
    if (!(pairs[i - 1].key() < pairs[i].key())) {
      return absl::InvalidArgumentError(
          absl::StrCat("snapshot pairs not sorted or duplicated at key '", pairs[i].key(), "'"));
    }
  }
  state->DeleteRange("", "");
  for (const kv::pb::KvPair& pair : pairs) state->Put(pair.key(), pair.value());
  return absl::OkStatus();
}

}  // namespace ds::rsm
