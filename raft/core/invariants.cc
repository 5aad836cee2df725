#include "raft/core/invariants.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace ds::raft {

void InvariantChecker::OnRestart(uint64_t id) { nodes_[id] = NodeState{}; }

absl::Status InvariantChecker::RecordCommitted(uint64_t id, uint64_t observer_term,
                                               const pb::Entry& e) {
  auto [it, inserted] = committed_.emplace(e.index(), Committed{e.term(), e.data(), observer_term});
  if (!inserted && (it->second.term != e.term() || it->second.data != e.data())) {
    return absl::InternalError(absl::StrCat("state machine safety: node ", id, " has index ",
                                            e.index(), " term ", e.term(), " committed, but term ",
                                            it->second.term, " was committed there before"));
  }
  it->second.known_in_term = std::min(it->second.known_in_term, observer_term);
  return absl::OkStatus();
}

absl::Status InvariantChecker::OnApply(uint64_t id, uint64_t term, const pb::Entry& e) {
  auto it = committed_.find(e.index());
  if (it == committed_.end()) return RecordCommitted(id, term, e);
  if (it->second.term != e.term() || it->second.data != e.data()) {
    return absl::InternalError(absl::StrCat("state machine safety: node ", id, " applied index ",
                                            e.index(), " term ", e.term(), ", committed term is ",
                                            it->second.term));
  }
  return absl::OkStatus();
}

absl::Status InvariantChecker::Check(const std::vector<const Core*>& nodes) {
  for (const Core* n : nodes) {
    if (n == nullptr) continue;
    if (absl::Status s = CheckNode(*n); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status InvariantChecker::CheckNode(const Core& n) {
  const uint64_t id = n.id();
  NodeState& st = nodes_[id];
  const RaftLog& log = n.log();

  // Election safety.
  if (n.role() == Role::kLeader) {
    auto [it, inserted] = leaders_.emplace(n.term(), id);
    if (!inserted && it->second != id) {
      return absl::InternalError(absl::StrCat("election safety: nodes ", it->second, " and ", id,
                                              " are both leaders of term ", n.term()));
    }
  }

  // Membership (thesis §4.1, §4.2.2): a leader has at most one configuration
  // change that is not committed, and leads after its own removal only until
  // that removal commits.
  if (n.role() == Role::kLeader) {
    int uncommitted = 0;
    for (auto it = n.conf_entries().upper_bound(n.commit()); it != n.conf_entries().end(); ++it) {
      ++uncommitted;
    }
    if (uncommitted > 1) {
      return absl::InternalError(absl::StrCat("membership: leader ", id, " of term ", n.term(),
                                              " has ", uncommitted,
                                              " uncommitted configuration entries"));
    }
    if (!n.IsVoter(id) && n.conf_index() <= n.commit()) {
      return absl::InternalError(absl::StrCat("membership: node ", id, " still leads term ",
                                              n.term(), " after its removal committed at index ",
                                              n.conf_index()));
    }
  }

  // Commit monotonic.
  if (n.commit() < st.last_commit) {
    return absl::InternalError(absl::StrCat("commit monotonic: node ", id, " commit went from ",
                                            st.last_commit, " to ", n.commit()));
  }
  st.last_commit = n.commit();
  if (n.commit() > log.LastIndex()) {
    return absl::InternalError(
        absl::StrCat("node ", id, " commit ", n.commit(), " beyond last index ", log.LastIndex()));
  }

  // Log matching, for the entries not yet verified as committed (committed
  // entries never change, so they are checked once).
  const uint64_t from = std::max(st.verified_commit + 1, log.FirstIndex());
  std::vector<pb::Entry> entries = log.AllEntriesFrom(from);
  for (const pb::Entry& e : entries) {
    const uint64_t prev_term = e.index() > log.FirstIndex() || e.index() == log.FirstIndex()
                                   ? log.TermOrZero(e.index() - 1)
                                   : 0;
    auto [it, inserted] = seen_.try_emplace({e.index(), e.term()}, Seen{prev_term, e.data()});
    if (!inserted) {
      Seen& seen = it->second;
      if (seen.data != e.data() ||
          (seen.prev_term != 0 && prev_term != 0 && seen.prev_term != prev_term)) {
        return absl::InternalError(absl::StrCat("log matching: node ", id, " entry ", e.index(),
                                                " term ", e.term(), " differs from another log's"));
      }
      if (seen.prev_term == 0) seen.prev_term = prev_term;
    }
    // State machine safety (on commit).
    if (e.index() <= n.commit()) {
      if (absl::Status s = RecordCommitted(id, n.term(), e); !s.ok()) return s;
    }
  }
  st.verified_commit = std::max(st.verified_commit, n.commit());

  // Leader completeness (§5.4): once per (leader, term), every entry
  // committed in an earlier term. (A leader of a stale term can still be
  // elected by delayed votes after a later term committed more entries; it
  // cannot commit anything, and lacking those entries is no violation.)
  if (n.role() == Role::kLeader && completeness_checked_.insert({id, n.term()}).second) {
    for (auto it = committed_.lower_bound(log.FirstIndex()); it != committed_.end(); ++it) {
      if (it->second.known_in_term >= n.term()) continue;
      if (!log.MatchTerm(it->first, it->second.term)) {
        return absl::InternalError(absl::StrCat("leader completeness: leader ", id, " of term ",
                                                n.term(), " lacks committed entry ", it->first));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace ds::raft
