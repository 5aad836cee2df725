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

namespace {

std::string Join(std::string_view prefix, std::string_view key) {
  std::string out;
  out.reserve(prefix.size() + key.size());
  out.append(prefix.data(), prefix.size());
  out.append(key.data(), key.size());
  return out;
}

}  // namespace

absl::StatusOr<pb::KvResult> ExecuteOn(rsm::AppState& state, std::string_view prefix,
                                       const pb::KvCommand& cmd, int64_t* key_delta) {
  pb::KvResult result;
  const std::string key = Join(prefix, cmd.key());
  switch (cmd.op()) {
    case pb::OP_GET:
      // Only when a read goes through the log; it changes nothing.
      return GetFrom(state, prefix, cmd.key());
    case pb::OP_PUT:
      if (key_delta != nullptr && !state.Get(key)) ++*key_delta;
      state.Put(key, cmd.value());
      break;
    case pb::OP_APPEND: {
      // 6.824: appending to a missing key acts like Put.
      std::optional<std::string> value = state.Get(key);
      if (!value) {
        if (key_delta != nullptr) ++*key_delta;
        state.Put(key, cmd.value());
      } else {
        value->append(cmd.value());
        state.Put(key, *value);
      }
      break;
    }
    case pb::OP_DELETE:
      if (state.Get(key)) {
        result.set_found(true);
        if (key_delta != nullptr) --*key_delta;
        state.Delete(key);
      }
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown operation ", cmd.op()));
  }
  return result;
}

pb::KvResult GetFrom(const rsm::AppState& state, std::string_view prefix, std::string_view key) {
  pb::KvResult result;
  if (std::optional<std::string> value = state.Get(Join(prefix, key))) {
    result.set_found(true);
    *result.mutable_value() = std::move(*value);
  }
  return result;
}

absl::StatusOr<pb::KvResult> KvStateMachine::Execute(const pb::KvCommand& cmd) {
  return ExecuteOn(*state_, "", cmd);
}

pb::KvResult KvStateMachine::Get(std::string_view key) const { return GetFrom(*state_, "", key); }

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
