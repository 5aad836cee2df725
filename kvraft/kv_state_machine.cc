#include "kvraft/kv_state_machine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace ds::kv {

KvStateMachine::KvStateMachine(KvStateMachineOptions options)
    : options_(options), sessions_(options.sessions) {}

absl::StatusOr<pb::KvResult> KvStateMachine::Apply(std::string_view command, uint64_t index) {
  if (index <= applied_index_) {
    return absl::FailedPreconditionError(
        absl::StrCat("entry ", index, " is at or below the applied index ", applied_index_));
  }
  applied_index_ = index;
  if (command.empty()) return pb::KvResult();

  pb::KvCommand cmd;
  if (!cmd.ParseFromArray(command.data(), static_cast<int>(command.size()))) {
    return absl::InvalidArgumentError(absl::StrCat("entry ", index, " is not a KvCommand"));
  }
  // Advance the logical clock first, so that expiry sees the same time on every
  // replica whatever the command turns out to be.
  clock_unix_micros_ = std::max(clock_unix_micros_, cmd.proposal_time_unix_micros());
  sessions_.ExpireIdle(clock_unix_micros_);

  switch (cmd.op()) {
    case pb::OP_GET:
      // Reads change nothing, so they need no deduplication and do not consume a
      // sequence number even when they go through the log.
      return Get(cmd.key());
    case pb::OP_REGISTER: {
      // §6.3: the log index names the session: unique, and every replica picks
      // the same one with no coordination. A register is not deduplicated (any
      // client_id or sequence in it is ignored): a retried register whose reply
      // was lost opens another session that nobody uses, which costs a table
      // slot until session_ttl expires it or max_sessions evicts it.
      if (absl::Status status = sessions_.Register(index, clock_unix_micros_); !status.ok()) {
        return status;  // only with a malformed snapshot holding an id above its index
      }
      pb::KvResult result;
      result.set_client_id(index);
      return result;
    }
    case pb::OP_PUT:
    case pb::OP_APPEND:
    case pb::OP_DELETE:
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("entry ", index, ": unknown operation ", cmd.op()));
  }

  if (cmd.client_id() == 0) return Execute(cmd);  // sessionless: no dedup
  if (cmd.sequence() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("entry ", index, ": client ", cmd.client_id(), " sent no sequence number"));
  }
  std::string cached;
  switch (sessions_.Check(cmd.client_id(), cmd.sequence(), &cached)) {
    case SessionTable::Verdict::kNew:
      break;
    case SessionTable::Verdict::kDuplicate: {
      pb::KvResult result;
      // The cached bytes were produced by Execute() below; they always parse.
      result.ParseFromString(cached);
      return result;
    }
    case SessionTable::Verdict::kStale:
      return absl::AlreadyExistsError(absl::StrCat("client ", cmd.client_id(), " sequence ",
                                                   cmd.sequence(),
                                                   " is older than its latest command"));
    case SessionTable::Verdict::kExpired:
      return absl::FailedPreconditionError(
          absl::StrCat("client ", cmd.client_id(),
                       " has no session (expired, evicted or never registered); register a new "
                       "session: the outcome of this command is unknown"));
  }
  pb::KvResult result = Execute(cmd);
  sessions_.Record(cmd.client_id(), cmd.sequence(), result.SerializeAsString(), clock_unix_micros_);
  return result;
}

pb::KvResult KvStateMachine::Execute(const pb::KvCommand& cmd) {
  pb::KvResult result;
  auto it = data_.find(cmd.key());
  switch (cmd.op()) {
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
      break;  // Apply() only passes writes
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

std::string KvStateMachine::Snapshot() const {
  pb::KvSnapshot snapshot;
  snapshot.set_applied_index(applied_index_);
  snapshot.set_clock_unix_micros(clock_unix_micros_);
  for (const auto& [key, value] : data_) {
    pb::KvPair* pair = snapshot.add_data();
    pair->set_key(key);
    pair->set_value(value);
  }
  sessions_.SaveTo(snapshot.mutable_sessions());
  return snapshot.SerializeAsString();
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
  SessionTable sessions(options_.sessions);
  if (absl::Status status = sessions.LoadFrom(snapshot.sessions()); !status.ok()) {
    return status;
  }
  data_ = std::move(data);
  data_bytes_ = data_bytes;
  sessions_ = std::move(sessions);
  applied_index_ = snapshot.applied_index();
  clock_unix_micros_ = snapshot.clock_unix_micros();
  return absl::OkStatus();
}

}  // namespace ds::kv
