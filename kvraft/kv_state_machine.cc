#include "kvraft/kv_state_machine.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace ds::kv {

absl::StatusOr<std::string> KvStateMachine::Apply(std::string_view command,
                                                  const rsm::ApplyContext& context) {
  pb::KvCommand cmd;
  if (!cmd.ParseFromArray(command.data(), static_cast<int>(command.size()))) {
    return absl::InvalidArgumentError(absl::StrCat("entry ", context.index, " is not a KvCommand"));
  }
  absl::StatusOr<pb::KvResult> result = Execute(cmd);
  if (!result.ok()) {
    return absl::Status(result.status().code(),
                        absl::StrCat("entry ", context.index, ": ", result.status().message()));
  }
  return result->SerializeAsString();
}

absl::StatusOr<pb::KvResult> KvStateMachine::Execute(const pb::KvCommand& cmd) {
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

pb::KvResult KvStateMachine::Get(std::string_view key) const {
  pb::KvResult result;
  // Debian's absl::string_view is not std::string_view: convert explicitly.
  auto it = data_.find(absl::string_view(key.data(), key.size()));
  if (it != data_.end()) {
    result.set_found(true);
    result.set_value(it->second);
  }
  return result;
}

void KvStateMachine::SnapshotTo(std::string* out) const {
  pb::KvSnapshot snapshot;
  for (const auto& [key, value] : data_) {
    pb::KvPair* pair = snapshot.add_data();
    pair->set_key(key);
    pair->set_value(value);
  }
  snapshot.AppendToString(out);
}

absl::Status KvStateMachine::Restore(std::string_view bytes) {
  pb::KvSnapshot snapshot;
  if (!snapshot.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError("not a KvSnapshot");
  }
  absl::btree_map<std::string, std::string> data;
  int64_t data_bytes = 0;
  for (pb::KvPair& pair : *snapshot.mutable_data()) {
    data_bytes += static_cast<int64_t>(pair.key().size() + pair.value().size());
    if (!data.emplace(std::move(*pair.mutable_key()), std::move(*pair.mutable_value())).second) {
      return absl::InvalidArgumentError("snapshot has a duplicate key");
    }
  }
  data_ = std::move(data);
  data_bytes_ = data_bytes;
  return absl::OkStatus();
}

}  // namespace ds::kv
