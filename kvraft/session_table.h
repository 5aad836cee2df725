// Client sessions for exactly-once semantics in a replicated state machine
// (Raft thesis §6.3). Generic over the result type: results are opaque bytes, so
// kvraft, shardctrler and shardkv share it.
//
// A client first opens a session (Register, itself a replicated command; the
// state machine chooses the id). Every mutating command then carries
// (client_id, sequence): the client sends its commands one at a time, numbered
// 1, 2, 3, ..., and retries a command with the same number until it gets an
// answer. The table remembers, per session, the highest sequence applied and
// its result, so a retry that was already applied (for example by the old
// leader just before it crashed) returns the cached result instead of being
// applied twice.
//
// A command from a client without a session is refused (kExpired), whatever
// its sequence: the table cannot tell a new client from one whose session was
// forgotten (expired or evicted), and taking the second for the first would
// apply a retried command twice. That is why sessions are opened explicitly.
//
// The table is part of the replicated state: it changes only through the
// commands applied in log order and it is saved in snapshots, so every replica
// and every restart makes the same decision for the same command.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "proto/kv.pb.h"

namespace ds::kv {

struct SessionTableOptions {
  // A session idle for longer than this, measured on the logical clock carried in
  // the commands, is forgotten. Must be far longer than any client's retry window:
  // a retry arriving after its session expired is refused (kExpired), never
  // applied twice. MUST be the same on every replica of a group (it changes the
  // replicated state). Default: 1 hour. absl::InfiniteDuration(): never expire.
  absl::Duration session_ttl = absl::Hours(1);

  // Upper bound on the number of sessions; when Register() would exceed it, the
  // least recently active session is evicted first (its client's next command
  // is then refused as kExpired). Same coupling as session_ttl.
  // Default: 0 (no bound; only session_ttl limits the table).
  int64_t max_sessions = 0;
};

class SessionTable {
 public:
  enum class Verdict {
    kNew,        // not applied yet: apply it, then Record() the result
    kDuplicate,  // the latest command of this client: answer with the cached result
    kStale,      // older than the latest: the client already has its answer
    kExpired,    // no session: never registered, expired or evicted
  };

  explicit SessionTable(SessionTableOptions options = {});

  // Opens a session for `client_id` with no command applied yet (last sequence
  // 0), active at logical time `now_unix_micros`. Evicts the least recently
  // active sessions first if max_sessions would be exceeded. InvalidArgument for
  // client id 0, AlreadyExists if the id has a session (ids are never reused:
  // the caller derives them from log indexes); the table is then unchanged.
  absl::Status Register(uint64_t client_id, int64_t now_unix_micros);

  // Classifies command `sequence` of `client_id`; on kDuplicate, *cached_result
  // (if not null) receives the result recorded for it. A client without a
  // session gets kExpired for any sequence, 1 included.
  // Precondition: client_id != 0 and sequence != 0 (sessionless commands skip the
  // table).
  Verdict Check(uint64_t client_id, uint64_t sequence, std::string* cached_result = nullptr) const;

  // Records that `sequence` of `client_id` was applied with `result`, at logical
  // time `now_unix_micros` (the clock after the command advanced it).
  // Precondition: Check() just returned kNew for it, so the session exists; a
  // client without a session is ignored (Record never opens one).
  void Record(uint64_t client_id, uint64_t sequence, std::string result, int64_t now_unix_micros);

  // Forgets sessions idle for longer than the TTL at logical time
  // `now_unix_micros`. Call once per applied command, before Check(), with the
  // state machine's clock. Returns the number of sessions removed.
  int64_t ExpireIdle(int64_t now_unix_micros);

  int64_t size() const { return static_cast<int64_t>(sessions_.size()); }

  // Snapshot support: the state as a message (sorted by client_id, so the same
  // table always serializes to the same bytes) and back.
  void SaveTo(pb::SessionTableState* state) const;
  // Replaces the contents. InvalidArgument on a malformed state (duplicate or zero
  // client ids); the table is then left empty. A session with last sequence 0 is
  // valid: registered, no command applied yet.
  absl::Status LoadFrom(const pb::SessionTableState& state);

 private:
  struct Session {
    uint64_t last_sequence = 0;
    std::string last_result;
    int64_t last_active_unix_micros = 0;
  };

  void Touch(uint64_t client_id, Session& session, int64_t now_unix_micros);

  SessionTableOptions options_;
  absl::flat_hash_map<uint64_t, Session> sessions_;
  // (last_active, client_id) of every session: the expiry and eviction order.
  absl::btree_set<std::pair<int64_t, uint64_t>> by_activity_;
};

}  // namespace ds::kv
