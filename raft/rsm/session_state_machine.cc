#include "raft/rsm/session_state_machine.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ds::rsm {
namespace {

constexpr char kWatermarkPayload[] = "type.googleapis.com/ds.rsm.SessionWatermark";

// Snapshot framing: an 8-byte little-endian length, the header, the app bytes.
constexpr size_t kLengthBytes = 8;

void PutLength(uint64_t n, std::string* out) {
  for (size_t i = 0; i < kLengthBytes; ++i)
    out->push_back(static_cast<char>((n >> (8 * i)) & 0xff));
}

uint64_t GetLength(std::string_view in) {
  uint64_t n = 0;
  for (size_t i = 0; i < kLengthBytes; ++i) {
    n |= static_cast<uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  }
  return n;
}

}  // namespace

absl::Status SessionExpiredError(const pb::SessionRef& session, int64_t watermark_unix_micros) {
  absl::Status s = absl::AbortedError(absl::StrCat(
      "session ", session.client_id(),
      " is unknown here (expired, evicted, or created at or before the session watermark ",
      watermark_unix_micros,
      "): the outcome of this command is unknown; start a new session to continue"));
  s.SetPayload(kWatermarkPayload, absl::Cord(absl::StrCat(watermark_unix_micros)));
  return s;
}

int64_t SessionWatermark(const absl::Status& status) {
  auto payload = status.GetPayload(kWatermarkPayload);
  int64_t w = 0;
  if (!payload || !absl::SimpleAtoi(std::string(*payload), &w)) return 0;
  return w;
}

namespace {

// The wire format of SessionCommand written by hand, so that the command's
// bytes are written once, straight into the entry (building a SessionCommand
// and serializing it copies them twice more): field 1 session, field 2
// proposal time, field 3 command. pb::SessionCommand parses it.
void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

std::string EnvelopeHead(const pb::SessionRef* session, int64_t proposal_time_unix_micros,
                         size_t command_bytes) {
  std::string out;
  const size_t session_bytes = session != nullptr ? session->ByteSizeLong() : 0;
  out.reserve(session_bytes + command_bytes + 32);
  if (session != nullptr) {
    out.push_back(static_cast<char>((1 << 3) | 2));  // field 1, length-delimited
    PutVarint(session_bytes, &out);
    session->AppendToString(&out);
  }
  if (proposal_time_unix_micros != 0) {
    out.push_back(static_cast<char>((2 << 3) | 0));  // field 2, varint
    PutVarint(static_cast<uint64_t>(proposal_time_unix_micros), &out);
  }
  if (command_bytes > 0) {
    out.push_back(static_cast<char>((3 << 3) | 2));  // field 3, length-delimited
    PutVarint(command_bytes, &out);
  }
  return out;
}

}  // namespace

std::string EncodeCommand(const pb::SessionRef* session, std::string_view command,
                          int64_t proposal_time_unix_micros) {
  std::string out = EnvelopeHead(session, proposal_time_unix_micros, command.size());
  out.append(command.data(), command.size());
  return out;
}

std::string EncodeCommand(const pb::SessionRef* session,
                          const google::protobuf::MessageLite& command,
                          int64_t proposal_time_unix_micros) {
  const size_t size = command.ByteSizeLong();
  std::string out = EnvelopeHead(session, proposal_time_unix_micros, size);
  if (size > 0) command.AppendToString(&out);
  return out;
}

std::string EncodeOpen(const pb::SessionRef& session, int64_t proposal_time_unix_micros) {
  pb::SessionCommand cmd;
  *cmd.mutable_session() = session;
  cmd.mutable_session()->set_sequence(0);
  cmd.set_proposal_time_unix_micros(proposal_time_unix_micros);
  cmd.set_open_only(true);
  return cmd.SerializeAsString();
}

namespace {

// Keys of the session layer in DiskState's meta column family.
constexpr char kHeaderKey[] = "m";      // SessionSnapshotHeader, sessions left out
constexpr char kSessionPrefix[] = "s";  // + client id (8 bytes, big-endian)
constexpr char kAppKey[] = "app";       // an in-memory application's SnapshotTo

std::string SessionKey(uint64_t client_id) {
  std::string key(kSessionPrefix);
  for (int i = 7; i >= 0; --i) key.push_back(static_cast<char>((client_id >> (8 * i)) & 0xff));
  return key;
}

}  // namespace

SessionStateMachine::SessionStateMachine(Application* app, SessionOptions options, DiskState* disk)
    : app_(app), disk_(disk), sessions_(options) {
  app_->Attach(disk_ != nullptr ? disk_->app() : &memory_);
  if (disk_ != nullptr) sessions_.TrackChanges();
}

absl::Status SessionStateMachine::Open() {
  if (disk_ == nullptr) return absl::OkStatus();
  app_->Attach(disk_->app());
  pb::SessionSnapshotHeader header;
  if (std::optional<std::string> bytes = disk_->GetMeta(kHeaderKey)) {
    if (!header.ParseFromString(*bytes)) {
      return absl::DataLossError("state on disk: the session header is corrupt");
    }
  }
  pb::SessionTableState table = header.sessions();
  absl::Status bad;
  disk_->ScanMeta(kSessionPrefix, [&](std::string_view key, std::string_view value) {
    if (!table.add_sessions()->ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      bad = absl::DataLossError(
          absl::StrCat("state on disk: session record ", key.size(), " bytes long is corrupt"));
      return false;
    }
    return true;
  });
  if (!bad.ok()) return bad;
  SessionTable sessions(sessions_.options());
  if (absl::Status s = sessions.LoadFrom(table); !s.ok()) return s;
  if (!app_->data_in_app_state()) {
    std::optional<std::string> bytes = disk_->GetMeta(kAppKey);
    if (absl::Status s = app_->Restore(bytes ? *bytes : std::string()); !s.ok() && bytes) return s;
  }
  sessions_ = std::move(sessions);
  sessions_.TrackChanges();
  applied_index_ = header.applied_index();
  clock_unix_micros_ = header.clock_unix_micros();
  session_count_.store(sessions_.size(), std::memory_order_relaxed);
  return absl::OkStatus();
}

void SessionStateMachine::FinishBatch() {
  // Nothing applied since the last one: nothing to write (TakeSnapshot then
  // only reads).
  if (disk_ == nullptr || !batch_pending_) return;
  batch_pending_ = false;
  std::vector<uint64_t> changed = sessions_.TakeChanged();
  std::sort(changed.begin(), changed.end());
  changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
  for (uint64_t id : changed) {
    pb::ClientSession session;
    if (sessions_.SaveSession(id, &session)) {
      disk_->PutMeta(SessionKey(id), session.SerializeAsString());
    } else {
      disk_->DeleteMeta(SessionKey(id));
    }
  }
  if (app_->data_in_app_state()) app_->SaveToState();
  if (app_changed_) {
    std::string bytes;
    app_->SnapshotTo(&bytes);
    disk_->PutMeta(kAppKey, bytes);
    app_changed_ = false;
  }
  pb::SessionSnapshotHeader header;
  header.set_applied_index(applied_index_);
  header.set_clock_unix_micros(clock_unix_micros_);
  header.mutable_sessions()->set_watermark_unix_micros(sessions_.watermark_unix_micros());
  disk_->PutMeta(kHeaderKey, header.SerializeAsString());
  disk_->Commit();
}

void SessionStateMachine::SaveAllSessions() {
  std::vector<std::string> stale;
  disk_->ScanMeta(kSessionPrefix, [&stale](std::string_view key, std::string_view) {
    stale.emplace_back(key);
    return true;
  });
  for (const std::string& key : stale) disk_->DeleteMeta(key);
  pb::SessionTableState table;
  sessions_.SaveTo(&table);
  for (const pb::ClientSession& session : table.sessions()) {
    disk_->PutMeta(SessionKey(session.client_id()), session.SerializeAsString());
  }
  sessions_.TakeChanged();
}

absl::StatusOr<std::string> SessionStateMachine::TakeSnapshot() {
  if (disk_ == nullptr) return Snapshot();
  FinishBatch();
  absl::StatusOr<pb::CheckpointManifest> manifest = disk_->Checkpoint(applied_index_);
  if (!manifest.ok()) return manifest.status();
  return EncodeManifest(*manifest);
}

void SessionStateMachine::ReleaseSnapshotsBefore(uint64_t index) {
  if (disk_ != nullptr) disk_->DropCheckpointsBefore(index);
}

absl::StatusOr<std::string> SessionStateMachine::Apply(const std::string& command, uint64_t index) {
  if (index <= applied_index_) {
    return absl::FailedPreconditionError(
        absl::StrCat("entry ", index, " is at or below the applied index ", applied_index_));
  }
  applied_index_ = index;
  batch_pending_ = true;
  if (command.empty()) return std::string();

  pb::SessionCommand cmd;
  if (!cmd.ParseFromString(command)) {
    return absl::InvalidArgumentError(absl::StrCat("entry ", index, " is not a SessionCommand"));
  }
  // Advance the logical clock first, so that expiry sees the same time on every
  // replica whatever the command turns out to be.
  clock_unix_micros_ = std::max(clock_unix_micros_, cmd.proposal_time_unix_micros());
  sessions_.ExpireIdle(clock_unix_micros_);

  ApplyContext context;
  context.index = index;
  context.clock_unix_micros = clock_unix_micros_;
  context.sessions = &sessions_;
  absl::StatusOr<std::string> result =
      cmd.has_session() ? ApplySession(cmd, context)
      : cmd.open_only()
          ? absl::InvalidArgumentError(absl::StrCat("entry ", index, ": open without a session"))
          : app_->Apply(cmd.command(), context);
  app_changed_ = disk_ != nullptr && !app_->data_in_app_state();
  session_count_.store(sessions_.size(), std::memory_order_relaxed);
  return result;
}

absl::StatusOr<std::string> SessionStateMachine::ApplySession(const pb::SessionCommand& cmd,
                                                              ApplyContext& context) {
  const pb::SessionRef& ref = cmd.session();
  context.session = &ref;
  if (ref.client_id() == 0 || ref.created_unix_micros() <= 0 ||
      (ref.sequence() == 0 && !cmd.open_only())) {
    return absl::InvalidArgumentError(
        absl::StrCat("entry ", context.index,
                     ": a session needs a nonzero client id, creation "
                     "time and sequence number"));
  }
  pb::SessionRef open_ref = ref;
  if (cmd.open_only()) open_ref.set_sequence(1);  // classify as a first command would be
  std::string cached;
  const SessionTable::Verdict verdict = sessions_.Check(open_ref, &cached);
  switch (verdict) {
    case SessionTable::Verdict::kNew:
      break;
    case SessionTable::Verdict::kOpen: {
      const int64_t skew = absl::ToInt64Microseconds(sessions_.options().max_clock_skew);
      if (ref.created_unix_micros() - clock_unix_micros_ > skew) {
        return absl::InvalidArgumentError(
            absl::StrCat("session ", ref.client_id(), " was created ",
                         absl::FormatDuration(
                             absl::Microseconds(ref.created_unix_micros() - clock_unix_micros_)),
                         " in the future of the leader's clock (more than the allowed skew of ",
                         absl::FormatDuration(sessions_.options().max_clock_skew),
                         "); check the client's clock"));
      }
      break;
    }
    case SessionTable::Verdict::kDuplicate:
      if (cmd.open_only()) break;  // the session is open: nothing to do
      return cached;
    case SessionTable::Verdict::kStale:
      if (cmd.open_only()) break;
      return absl::AlreadyExistsError(absl::StrCat("session ", ref.client_id(), " sequence ",
                                                   ref.sequence(),
                                                   " is older than its latest command"));
    case SessionTable::Verdict::kExpired:
      return SessionExpiredError(ref, sessions_.watermark_unix_micros());
  }
  if (cmd.open_only()) {
    sessions_.Open(ref, clock_unix_micros_);
    return std::string();
  }
  absl::StatusOr<std::string> result = app_->Apply(cmd.command(), context);
  if (!result.ok()) return result;  // nothing changed: not recorded
  if (verdict == SessionTable::Verdict::kOpen) sessions_.Open(ref, clock_unix_micros_);
  sessions_.Record(ref.client_id(), ref.sequence(), *result, clock_unix_micros_);
  return result;
}

std::string SessionStateMachine::Snapshot() const {
  pb::SessionSnapshotHeader header;
  header.set_applied_index(applied_index_);
  header.set_clock_unix_micros(clock_unix_micros_);
  sessions_.SaveTo(header.mutable_sessions());
  std::string out;
  const std::string header_bytes = header.SerializeAsString();
  PutLength(header_bytes.size(), &out);
  out += header_bytes;
  app_->SnapshotTo(&out);
  return out;
}

absl::Status SessionStateMachine::Restore(const std::string& snapshot) {
  absl::StatusOr<std::optional<pb::CheckpointManifest>> manifest = DecodeManifest(snapshot);
  if (!manifest.ok()) return manifest.status();
  if (!manifest->has_value()) {
    if (absl::Status s = RestoreInMemoryForm(snapshot); !s.ok()) return s;
    if (disk_ != nullptr) {
      // The upgrade path: a snapshot in the in-memory form, from an older
      // version of this replica or a peer, written into the disk state.
      SaveAllSessions();
      app_changed_ = !app_->data_in_app_state();
      batch_pending_ = true;
      FinishBatch();
    }
    return absl::OkStatus();
  }
  if (disk_ == nullptr) {
    return absl::FailedPreconditionError(
        "the snapshot is a checkpoint of a state on disk, but this replica keeps its state in "
        "memory");
  }
  if (absl::Status s = disk_->Restore(**manifest); !s.ok()) return s;
  absl::Status s = Open();
  if (!s.ok()) return s;
  if (applied_index_ != (*manifest)->applied_index()) {
    return absl::DataLossError(absl::StrCat("checkpoint ", (*manifest)->name(), " holds index ",
                                            applied_index_, ", its manifest says ",
                                            (*manifest)->applied_index()));
  }
  return absl::OkStatus();
}

absl::Status SessionStateMachine::RestoreInMemoryForm(std::string_view in) {
  if (in.size() < kLengthBytes || GetLength(in) > in.size() - kLengthBytes) {
    return absl::InvalidArgumentError("not a session state machine snapshot (bad header length)");
  }
  const uint64_t header_size = GetLength(in);
  pb::SessionSnapshotHeader header;
  if (!header.ParseFromArray(in.data() + kLengthBytes, static_cast<int>(header_size))) {
    return absl::InvalidArgumentError("not a session state machine snapshot (bad header)");
  }
  SessionTable sessions(sessions_.options());
  if (absl::Status s = sessions.LoadFrom(header.sessions()); !s.ok()) return s;
  // The application last: it is unchanged if it refuses, and so are we.
  if (absl::Status s = app_->Restore(in.substr(kLengthBytes + header_size)); !s.ok()) return s;
  sessions_ = std::move(sessions);
  if (disk_ != nullptr) sessions_.TrackChanges();
  applied_index_ = header.applied_index();
  clock_unix_micros_ = header.clock_unix_micros();
  session_count_.store(sessions_.size(), std::memory_order_relaxed);
  return absl::OkStatus();
}

}  // namespace ds::rsm
