#include "raft/rsm/session_table.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace ds::rsm {

pb::SessionRef MakeSessionRef(uint64_t client_id, int64_t created_unix_micros, uint64_t sequence) {
  pb::SessionRef ref;
  ref.set_client_id(client_id);
  ref.set_created_unix_micros(created_unix_micros);
  ref.set_sequence(sequence);
  return ref;
}

SessionTable::SessionTable(SessionOptions options) : options_(options) {}

SessionTable::Verdict SessionTable::Check(const pb::SessionRef& ref,
                                          std::string* cached_result) const {
  auto it = sessions_.find(ref.client_id());
  if (it == sessions_.end()) {
    // Even sequence 1 of a session at or below the watermark: a first command
    // retried after its session was forgotten looks exactly like it, and may
    // already have been applied.
    return ref.created_unix_micros() > watermark_unix_micros_ ? Verdict::kOpen : Verdict::kExpired;
  }
  const Session& session = it->second;
  // The same id with another creation time is not this session (a client bug,
  // or two clients drawing the same random id): refuse rather than mix them.
  if (session.created_unix_micros != ref.created_unix_micros()) return Verdict::kExpired;
  if (ref.sequence() > session.last_sequence) return Verdict::kNew;
  if (ref.sequence() < session.last_sequence) return Verdict::kStale;
  if (cached_result != nullptr) *cached_result = session.last_result;
  return Verdict::kDuplicate;
}

void SessionTable::Touch(uint64_t client_id, Session& session, int64_t now_unix_micros) {
  if (track_changes_) changed_.push_back(client_id);
  by_activity_.erase({session.last_active_unix_micros, client_id});
  // The logical clock never goes back, but keep the order sane if a caller passes
  // an older time: a session's activity time only moves forward.
  session.last_active_unix_micros = std::max(session.last_active_unix_micros, now_unix_micros);
  by_activity_.insert({session.last_active_unix_micros, client_id});
}

void SessionTable::ForgetOldest() {
  auto oldest = by_activity_.begin();
  auto it = sessions_.find(oldest->second);
  watermark_unix_micros_ = std::max(watermark_unix_micros_, it->second.created_unix_micros);
  if (track_changes_) changed_.push_back(it->first);
  sessions_.erase(it);
  by_activity_.erase(oldest);
}

void SessionTable::Open(const pb::SessionRef& ref, int64_t now_unix_micros) {
  if (sessions_.contains(ref.client_id())) return;
  if (options_.max_sessions > 0) {
    while (size() >= options_.max_sessions && !by_activity_.empty()) ForgetOldest();
  }
  if (track_changes_) changed_.push_back(ref.client_id());
  Session& session = sessions_[ref.client_id()];
  session.created_unix_micros = ref.created_unix_micros();
  session.last_active_unix_micros = now_unix_micros;
  by_activity_.insert({now_unix_micros, ref.client_id()});
}

void SessionTable::Record(uint64_t client_id, uint64_t sequence, std::string result,
                          int64_t now_unix_micros) {
  auto it = sessions_.find(client_id);
  if (it == sessions_.end()) return;
  Session& session = it->second;
  // The cached result is the latest command's: an older one (which the
  // session layer never records, but an application moving sessions might)
  // changes nothing but the activity time.
  if (sequence >= session.last_sequence) {
    session.last_sequence = sequence;
    session.last_result = std::move(result);
  }
  Touch(client_id, session, now_unix_micros);
}

void SessionTable::Forget(uint64_t client_id) {
  auto it = sessions_.find(client_id);
  watermark_unix_micros_ = std::max(watermark_unix_micros_, it->second.created_unix_micros);
  by_activity_.erase({it->second.last_active_unix_micros, client_id});
  if (track_changes_) changed_.push_back(client_id);
  sessions_.erase(it);
}

void SessionTable::Merge(const pb::ClientSession& other, int64_t now_unix_micros) {
  MergeSession(other, now_unix_micros, watermark_unix_micros_);
}

void SessionTable::MergeSession(const pb::ClientSession& other, int64_t now_unix_micros,
                                int64_t forgot_up_to_unix_micros) {
  if (other.client_id() == 0) return;
  auto it = sessions_.find(other.client_id());
  if (it == sessions_.end()) {
    // Possibly forgotten here after a later command than the other table saw.
    if (other.created_unix_micros() <= forgot_up_to_unix_micros) return;
    Open(MakeSessionRef(other.client_id(), other.created_unix_micros(), 0), now_unix_micros);
    Record(other.client_id(), other.last_sequence(), other.last_result(), now_unix_micros);
    return;
  }
  // Another creation time is another client that drew the same id: keep ours.
  if (it->second.created_unix_micros != other.created_unix_micros()) return;
  Record(other.client_id(), other.last_sequence(), other.last_result(), now_unix_micros);
}

void SessionTable::MergeTable(const pb::SessionTableState& other, int64_t now_unix_micros) {
  const int64_t ours = watermark_unix_micros_;
  const int64_t theirs = other.watermark_unix_micros();
  if (theirs > 0) {
    absl::flat_hash_set<uint64_t> known_there;
    known_there.reserve(other.sessions_size());
    for (const pb::ClientSession& s : other.sessions()) known_there.insert(s.client_id());
    std::vector<uint64_t> forget;
    for (const auto& [id, session] : sessions_) {
      if (session.created_unix_micros <= theirs && !known_there.contains(id)) forget.push_back(id);
    }
    std::sort(forget.begin(), forget.end());  // the same order on every replica
    for (uint64_t id : forget) Forget(id);
    watermark_unix_micros_ = std::max(watermark_unix_micros_, theirs);
  }
  // Sessions the other table knows are safe to add unless this table forgot
  // them itself (created at or before its own watermark before this merge).
  for (const pb::ClientSession& s : other.sessions()) MergeSession(s, now_unix_micros, ours);
}

int64_t SessionTable::ExpireIdle(int64_t now_unix_micros) {
  if (options_.session_ttl == absl::InfiniteDuration()) return 0;
  const int64_t ttl_micros = std::max<int64_t>(0, absl::ToInt64Microseconds(options_.session_ttl));
  // Nothing can have been idle longer than the TTL this early (and computing the
  // cutoff below would overflow).
  if (now_unix_micros <= std::numeric_limits<int64_t>::min() + ttl_micros) return 0;
  // Sessions last active at or before `cutoff` have been idle longer than the TTL.
  const int64_t cutoff = now_unix_micros - ttl_micros - 1;
  int64_t removed = 0;
  while (!by_activity_.empty() && by_activity_.begin()->first <= cutoff) {
    ForgetOldest();
    ++removed;
  }
  return removed;
}

void SessionTable::SaveTo(pb::SessionTableState* state) const {
  std::vector<uint64_t> ids;
  ids.reserve(sessions_.size());
  for (const auto& [id, session] : sessions_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  state->clear_sessions();
  for (uint64_t id : ids) SaveSession(id, state->add_sessions());
  state->set_watermark_unix_micros(watermark_unix_micros_);
}

bool SessionTable::SaveSession(uint64_t client_id, pb::ClientSession* out) const {
  auto it = sessions_.find(client_id);
  if (it == sessions_.end()) return false;
  const Session& session = it->second;
  out->set_client_id(client_id);
  out->set_created_unix_micros(session.created_unix_micros);
  out->set_last_sequence(session.last_sequence);
  out->set_last_result(session.last_result);
  out->set_last_active_unix_micros(session.last_active_unix_micros);
  return true;
}

absl::Status SessionTable::LoadFrom(const pb::SessionTableState& state) {
  sessions_.clear();
  by_activity_.clear();
  watermark_unix_micros_ = 0;
  for (const pb::ClientSession& in : state.sessions()) {
    // last_sequence 0 is an opened session that has applied nothing yet.
    absl::Status bad;
    if (in.client_id() == 0) {
      bad = absl::InvalidArgumentError("session table: a session has client id 0");
    } else if (!sessions_
                    .emplace(in.client_id(),
                             Session{in.created_unix_micros(), in.last_sequence(), in.last_result(),
                                     in.last_active_unix_micros()})
                    .second) {
      bad = absl::InvalidArgumentError(
          absl::StrCat("session table: duplicate client ", in.client_id()));
    }
    if (!bad.ok()) {
      sessions_.clear();
      by_activity_.clear();
      return bad;
    }
    by_activity_.insert({in.last_active_unix_micros(), in.client_id()});
  }
  watermark_unix_micros_ = state.watermark_unix_micros();
  return absl::OkStatus();
}

}  // namespace ds::rsm
