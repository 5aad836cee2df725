// Client sessions for exactly-once semantics in a replicated state machine
// (Raft thesis §6.3). Generic over the result type: results are opaque bytes, so
// kvraft, shardctrler and shardkv share it (through SessionStateMachine).
//
// Every mutating command carries a SessionRef: a client id and creation time
// the client picked when it started the session, and a sequence number. The
// client sends its commands one at a time, numbered 1, 2, 3, ..., and retries a
// command with the same number until it gets an answer. The table remembers,
// per session, the highest sequence applied and its result, so a retry that
// was already applied (for example by the old leader just before it crashed)
// returns the cached result instead of being applied twice.
//
// Opening a session costs nothing extra: the first command of a session the
// table does not know opens it. The danger is a retry whose session the table
// has since forgotten (expired or evicted): taking it for a new session would
// apply it twice. So the table keeps a watermark, the newest creation time of
// any session it ever forgot. An unknown session created after the watermark
// cannot have been forgotten, so it is new; one created at or before it may
// have been, and is refused (kExpired), whatever its sequence number.
//
// The table is part of the replicated state: it changes only through the
// commands applied in log order and it is saved in snapshots, so every replica
// and every restart makes the same decision for the same command. It never
// reads a clock: times are the state machine's logical clock (see
// SessionCommand.proposal_time_unix_micros) and the clients' creation times.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "proto/rsm.pb.h"

namespace ds::rsm {

// Every field MUST be the same on every replica of a group: they decide which
// commands are refused, which is replicated state.
struct SessionOptions {
  // A session idle for longer than this, measured on the logical clock carried
  // in the commands, is forgotten. Must be far longer than any client's retry
  // window: a retry arriving after its session was forgotten is refused
  // (kExpired), never applied twice. Default: 1 hour. absl::InfiniteDuration():
  // never expire.
  absl::Duration session_ttl = absl::Hours(1);

  // Upper bound on the number of sessions; opening one more evicts the least
  // recently active session first (its client's next command is then refused
  // as kExpired). 0: no bound (only session_ttl limits the table).
  // Default: 100,000 (a few MB for KV results).
  int64_t max_sessions = 100000;

  // A new session whose creation time is further than this ahead of the
  // logical clock is refused (InvalidArgument): once forgotten, it would raise
  // the watermark into the future and turn away every new client until the
  // clocks caught up. Default: 10 minutes.
  absl::Duration max_clock_skew = absl::Minutes(10);
};

// A SessionRef from its three fields.
pb::SessionRef MakeSessionRef(uint64_t client_id, int64_t created_unix_micros, uint64_t sequence);

class SessionTable {
 public:
  enum class Verdict {
    kNew,        // known session, not applied yet: apply it, then Record()
    kOpen,       // unknown session created after the watermark: Open(), apply, Record()
    kDuplicate,  // the latest command of this session: answer with the cached result
    kStale,      // older than the latest: the client already has its answer
    kExpired,    // unknown session at or below the watermark (or an id reused
                 // with another creation time): may have been forgotten
  };

  explicit SessionTable(SessionOptions options = {});

  // Classifies `ref`'s command; on kDuplicate, *cached_result (if not null)
  // receives the result recorded for it. Precondition: ref.client_id() != 0 and
  // ref.sequence() != 0 (the caller refuses those as bad input).
  Verdict Check(const pb::SessionRef& ref, std::string* cached_result = nullptr) const;

  // Opens a session with no command applied yet (last sequence 0), active at
  // logical time `now_unix_micros`. Evicts the least recently active sessions
  // first if max_sessions would be exceeded (raising the watermark). A session
  // the table knows is left as it is. Precondition: Check() said kOpen (or
  // kNew, for an explicit Register of a known session).
  void Open(const pb::SessionRef& ref, int64_t now_unix_micros);

  // Records that `sequence` of `client_id` was applied with `result`, at logical
  // time `now_unix_micros` (the clock after the command advanced it). A client
  // without a session is ignored (Record never opens one).
  void Record(uint64_t client_id, uint64_t sequence, std::string result, int64_t now_unix_micros);

  // Forgets sessions idle for longer than the TTL at logical time
  // `now_unix_micros`, raising the watermark. Call once per applied command,
  // before Check(), with the state machine's clock. Returns how many it removed.
  int64_t ExpireIdle(int64_t now_unix_micros);

  // Takes in a session from another table (shardkv moves sessions with
  // shards): unknown here, it is added as it was there (active at
  // `now_unix_micros`, evicting the least recently used first if the table is
  // full); known with the same creation time, it keeps whichever of the two
  // has the later sequence. Either way the result is as if this table had
  // seen the other's commands too, so none of them is applied twice. An
  // unknown session created at or before this table's watermark is left out:
  // this table may have forgotten it after applying a later command than the
  // other table saw, so it must stay refused (kExpired).
  void Merge(const pb::ClientSession& other, int64_t now_unix_micros);

  // Takes in a whole table (the previous owner's, with a shard): every session
  // as Merge() does, and the other table's watermark too. A session this table
  // knows that was created at or before the other's watermark but is not in
  // the other table may have had a command applied there and then forgotten,
  // above the sequence this table knows; it is forgotten here as well, so its
  // retry is refused (kExpired) rather than applied twice. Its client's next
  // command, never sent before, is re-sent by the client under a new session.
  void MergeTable(const pb::SessionTableState& other, int64_t now_unix_micros);

  int64_t size() const { return static_cast<int64_t>(sessions_.size()); }
  int64_t watermark_unix_micros() const { return watermark_unix_micros_; }
  const SessionOptions& options() const { return options_; }

  // For a state machine that saves sessions one by one (on disk): from the
  // first call on, the table remembers which sessions changed (recorded,
  // opened, merged or forgotten); TakeChanged() hands their ids over (in no
  // particular order, maybe repeated) and starts afresh.
  void TrackChanges() { track_changes_ = true; }
  std::vector<uint64_t> TakeChanged() { return std::exchange(changed_, {}); }
  // One session as saved in SaveTo; false if the table does not know it.
  bool SaveSession(uint64_t client_id, pb::ClientSession* out) const;

  // Snapshot support: the state as a message (sorted by client_id, so the same
  // table always serializes to the same bytes) and back.
  void SaveTo(pb::SessionTableState* state) const;
  // Replaces the contents. InvalidArgument on a malformed state (duplicate or
  // zero client ids); the table is then left empty.
  absl::Status LoadFrom(const pb::SessionTableState& state);

 private:
  struct Session {
    int64_t created_unix_micros = 0;
    uint64_t last_sequence = 0;
    std::string last_result;
    int64_t last_active_unix_micros = 0;
  };

  void Touch(uint64_t client_id, Session& session, int64_t now_unix_micros);
  // Removes the least recently active session, raising the watermark.
  void ForgetOldest();
  // Removes `client_id`'s session (known), raising the watermark.
  void Forget(uint64_t client_id);
  // Merge() with the watermark below which an unknown session is left out.
  void MergeSession(const pb::ClientSession& other, int64_t now_unix_micros,
                    int64_t forgot_up_to_unix_micros);

  SessionOptions options_;
  absl::flat_hash_map<uint64_t, Session> sessions_;
  // (last_active, client_id) of every session: the expiry and eviction order.
  absl::btree_set<std::pair<int64_t, uint64_t>> by_activity_;
  int64_t watermark_unix_micros_ = 0;
  bool track_changes_ = false;
  std::vector<uint64_t> changed_;
};

}  // namespace ds::rsm
