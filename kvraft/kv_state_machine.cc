#include "kvraft/kv_state_machine.h"

#include <optional>
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
  switch (cmd.op()) {
    case pb::OP_GET:
      // Only when a read goes through the log; it changes nothing.
      return Get(cmd.key());
    case pb::OP_PUT:
      state_->Put(cmd.key(), cmd.value());
      break;
    case pb::OP_APPEND: {
      // 6.824: appending to a missing key acts like Put.
      std::optional<std::string> value = state_->Get(cmd.key());
      if (!value) {
        state_->Put(cmd.key(), cmd.value());
      } else {
        value->append(cmd.value());
        state_->Put(cmd.key(), *value);
      }
      break;
    }
    case pb::OP_DELETE:
      if (state_->Get(cmd.key())) {
        result.set_found(true);
        state_->Delete(cmd.key());
      }
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown operation ", cmd.op()));
  }
  return result;
}

pb::KvResult KvStateMachine::Get(std::string_view key) const {
  pb::KvResult result;
  if (std::optional<std::string> value = state_->Get(key)) {
    result.set_found(true);
    *result.mutable_value() = std::move(*value);
  }
  return result;
}

void KvStateMachine::SnapshotTo(std::string* out) const {
  pb::KvSnapshot snapshot;
  rsm::SavePairs(*state_, snapshot.mutable_data());
  snapshot.AppendToString(out);
}

absl::Status KvStateMachine::Restore(std::string_view bytes) {
  pb::KvSnapshot snapshot;
  if (!snapshot.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError("not a KvSnapshot");
  }
  return rsm::LoadPairs(snapshot.data(), state_);
}

}  // namespace ds::kv
