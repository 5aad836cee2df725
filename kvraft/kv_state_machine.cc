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
  return store_.Execute(cmd);
}

pb::KvResult KvStateMachine::Get(std::string_view key) const { return store_.Get(key); }

void KvStateMachine::SnapshotTo(std::string* out) const {
  pb::KvSnapshot snapshot;
  store_.SaveTo(snapshot.mutable_data());
  snapshot.AppendToString(out);
}

absl::Status KvStateMachine::Restore(std::string_view bytes) {
  pb::KvSnapshot snapshot;
  if (!snapshot.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError("not a KvSnapshot");
  }
  return store_.LoadFrom(snapshot.mutable_data());
}

}  // namespace ds::kv
