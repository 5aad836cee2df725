// Exactly-once for any replicated application: SessionStateMachine is the
// raft::StateMachine that the Rsm applies to; it keeps the client sessions,
// the logical clock and the applied index, and hands the application only
// commands that are new. kvraft, shardctrler and shardkv are each an
// Application (apply, snapshot, restore) and nothing more.
//
// Every log entry is a pb::SessionCommand (proto/rsm.proto): the session of
// the command (if any), the leader's clock, and the application's own command
// bytes. For a command with a session, Apply:
//   - advances the logical clock and forgets sessions idle past the TTL;
//   - answers a retry of the session's latest command with the cached result,
//     refuses an older one (kAlreadyExists) and a command of a session it does
//     not know and may have forgotten (kAborted, with the watermark as payload:
//     SessionWatermark());
//   - otherwise calls Application::Apply and, if that succeeded, records the
//     result (opening the session first if it is new).
// An Application error is not recorded: the command changed nothing, and a
// retry with the same sequence number is evaluated again. (shardkv relies on
// this: a key of a shard the group does not serve fails, and the client sends
// the same command to the right group.)
//
// Pure and deterministic like the application under it; not thread-safe (the
// Rsm applies from one thread and serializes reads against it).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message_lite.h"
#include "proto/rsm.pb.h"
#include "raft/rsm/app_state.h"
#include "raft/rsm/disk_state.h"
#include "raft/rsm/session_table.h"
#include "raft/rsm/state_machine.h"

namespace ds::rsm {

// What the application sees while applying one command.
struct ApplyContext {
  uint64_t index = 0;                       // the log entry
  int64_t clock_unix_micros = 0;            // the logical clock, this command included
  const pb::SessionRef* session = nullptr;  // nullptr: a sessionless command
  // The session table, for applications that move sessions between groups
  // (shardkv); the session of this command is recorded after Apply returns.
  SessionTable* sessions = nullptr;
};

class Application {
 public:
  virtual ~Application() = default;
  // Applies a command that was never applied before. Must be deterministic:
  // the result and the new state depend only on the state and the arguments.
  // An error means the state did not change.
  virtual absl::StatusOr<std::string> Apply(std::string_view command,
                                            const ApplyContext& context) = 0;
  // Appends the whole application state to *out (the in-memory snapshot
  // format).
  virtual void SnapshotTo(std::string* out) const = 0;
  // Replaces the whole state with what SnapshotTo wrote. On error the state is
  // unchanged.
  virtual absl::Status Restore(std::string_view snapshot) = 0;

  // An application that keeps its data in an AppState (kvraft) says so, and
  // is given the state to use: at construction of the SessionStateMachine
  // and again whenever the state was replaced (a restored checkpoint), so it
  // can reload what it caches in memory. Its SnapshotTo/Restore then save
  // and load that AppState's pairs. Any other application keeps its state in
  // memory; on disk, the session layer saves its SnapshotTo bytes after
  // every batch that changed it (fine for small states: the controller's).
  virtual bool data_in_app_state() const { return false; }
  virtual void Attach(AppState* state) { (void)state; }
  // Such an application writes what it keeps in memory about its data (a
  // few KB: shardkv's configuration and shard states) to its AppState here,
  // just before each batch is written.
  virtual void SaveToState() {}
};

class SessionStateMachine final : public raft::StateMachine {
 public:
  // `app` (and `disk`) must outlive this object. Every replica of a group must
  // use the same `options` (see SessionOptions). Without `disk` the whole
  // state is in memory and a snapshot serializes it; with `disk` it lives in
  // RocksDB (raft/rsm/disk_state.h): Open() loads what the disk holds, each
  // batch of entries is written at FinishBatch(), and a snapshot is a
  // checkpoint whose manifest is the snapshot data.
  explicit SessionStateMachine(Application* app, SessionOptions options = {},
                               DiskState* disk = nullptr);

  // With `disk`: loads the applied index, clock, sessions (and an in-memory
  // application's state) from it. Call once before the first Apply.
  absl::Status Open();

  // `command` is a serialized pb::SessionCommand. Entries at or below
  // applied_index() are refused (kFailedPrecondition) and change nothing; any
  // other entry advances applied_index(), even when its command fails, because
  // every replica fails it the same way. An empty entry (a new leader's no-op)
  // only advances the index.
  absl::StatusOr<std::string> Apply(const std::string& command, uint64_t index) override;
  uint64_t applied_index() const override { return applied_index_; }
  // In memory: a pb::SessionSnapshotHeader (length-prefixed) followed by the
  // application's bytes. Equal states give equal bytes. (On disk: the same
  // bytes, built from the disk; for tests and tools, not for snapshots.)
  std::string Snapshot() const override;
  // On disk: a checkpoint (EncodeManifest); in memory: Snapshot().
  absl::StatusOr<std::string> TakeSnapshot() override;
  // Either form. On disk, the in-memory form is converted (the upgrade from
  // replicas that kept their state in memory); a checkpoint must be complete
  // in the snapshots directory.
  absl::Status Restore(const std::string& snapshot) override;
  // On disk: writes the batch (effects, sessions touched, applied index).
  void FinishBatch() override;
  void ReleaseSnapshotsBefore(uint64_t index) override;
  DiskState* disk() const { return disk_; }

  const Application& app() const { return *app_; }
  const SessionTable& sessions() const { return sessions_; }
  int64_t clock_unix_micros() const { return clock_unix_micros_; }
  // The number of sessions as of the last applied entry; safe to call from any
  // thread (for status reports).
  int64_t session_count() const { return session_count_.load(std::memory_order_relaxed); }

 private:
  absl::StatusOr<std::string> ApplySession(const pb::SessionCommand& cmd, ApplyContext& context);
  // The in-memory form's parts (Restore of either mode).
  absl::Status RestoreInMemoryForm(std::string_view in);
  // On disk: writes every session, not only the changed ones.
  void SaveAllSessions();

  Application* const app_;
  DiskState* const disk_;
  MemoryAppState memory_;  // the application's AppState without `disk`
  bool app_changed_ = false;
  bool batch_pending_ = false;  // applied entries not written yet (disk)
  SessionTable sessions_;
  uint64_t applied_index_ = 0;
  int64_t clock_unix_micros_ = 0;
  std::atomic<int64_t> session_count_{0};
};

// The log entry for `command` under `session` (nullptr: sessionless), stamped
// with the proposer's clock.
std::string EncodeCommand(const pb::SessionRef* session, std::string_view command,
                          int64_t proposal_time_unix_micros);
// The same with the command given as a message, serialized straight into the
// entry (no intermediate copy).
std::string EncodeCommand(const pb::SessionRef* session,
                          const google::protobuf::MessageLite& command,
                          int64_t proposal_time_unix_micros);
// The log entry that opens `session` explicitly (the Register RPC).
std::string EncodeOpen(const pb::SessionRef& session, int64_t proposal_time_unix_micros);

// kAborted: the session is unknown and may have been forgotten; carries the
// watermark, which SessionWatermark() reads back (0 if absent).
absl::Status SessionExpiredError(const pb::SessionRef& session, int64_t watermark_unix_micros);
int64_t SessionWatermark(const absl::Status& status);

}  // namespace ds::rsm
