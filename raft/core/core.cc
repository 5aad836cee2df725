#include "raft/core/core.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "raft/core/fatal.h"

namespace ds::raft {
namespace {

// Context of a MsgVote sent on MsgTimeoutNow: voters must not ignore it because
// of leader stickiness (the current leader asked for the transfer).
constexpr char kTransferContext[] = "transfer";

std::vector<uint64_t> VotersOf(const pb::ConfState& conf) {
  return std::vector<uint64_t>(conf.voters().begin(), conf.voters().end());
}

// A leader's MsgApp carries entries that follow m.index() one by one, with
// terms that start at or after m.log_term(), never decrease and never exceed
// its own term. Anything else is a malformed message, not a log to adopt.
absl::Status CheckAppendEntries(const pb::Message& m) {
  uint64_t prev_term = m.log_term();
  for (int k = 0; k < m.entries_size(); ++k) {
    const pb::Entry& e = m.entries(k);
    if (e.index() != m.index() + 1 + k) {
      return absl::InvalidArgumentError(absl::StrCat("MsgApp after index ", m.index(),
                                                     " has entry ", e.index(), " at position ", k));
    }
    if (e.term() < prev_term || e.term() > m.term()) {
      return absl::InvalidArgumentError(absl::StrCat("MsgApp of term ", m.term(), " has entry ",
                                                     e.index(), " with term ", e.term(),
                                                     " after term ", prev_term));
    }
    prev_term = e.term();
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckStorageForRestart(Storage& storage) {
  absl::StatusOr<InitialState> init = storage.GetInitialState();
  if (!init.ok()) {
    return absl::DataLossError(
        absl::StrCat("cannot read the initial state: ", init.status().ToString()));
  }
  const uint64_t first = storage.FirstIndex();
  const uint64_t last = storage.LastIndex();
  if (first == 0 || first > last + 1) {
    return absl::DataLossError(absl::StrCat("storage first index ", first,
                                            " is out of range [1, last index ", last, " + 1]"));
  }
  // The commit index is saved in the same write as the entries it covers (or
  // after them), so it can never point past the stored log.
  const uint64_t commit = init->hard_state.commit();
  if (commit > last) {
    return absl::DataLossError(absl::StrCat("hard state commit index ", commit, " (term ",
                                            init->hard_state.term(), ") is beyond last index ",
                                            last, " (first index ", first,
                                            "). Was the raft log corrupted, truncated, or lost?"));
  }
  return absl::OkStatus();
}

const char* RoleName(Role role) {
  switch (role) {
    case Role::kFollower:
      return "follower";
    case Role::kPreCandidate:
      return "pre-candidate";
    case Role::kCandidate:
      return "candidate";
    case Role::kLeader:
      return "leader";
  }
  return "?";
}

Core::Core(uint64_t id, const Options& options, Storage* storage)
    : id_(id), options_(options), rng_(options.seed ^ (id * 0x9e3779b97f4a7c15ull)), log_(storage) {
  // Starting with term and vote 0 (or the commit index clamped) would let this
  // node vote twice in a term or forget what it acknowledged: stop instead.
  if (absl::Status s = CheckStorageForRestart(*storage); !s.ok()) {
    Fatal(absl::StrCat("cannot restore node ", id, " from storage: ", s.message()));
  }
  absl::StatusOr<InitialState> init = storage->GetInitialState();
  if (!init.ok()) Fatal(absl::StrCat("cannot read the initial state: ", init.status().ToString()));
  term_ = init->hard_state.term();
  vote_ = init->hard_state.vote();
  log_.CommitTo(init->hard_state.commit());
  base_conf_ = init->snapshot_conf_state;
  if (base_conf_.voters().empty() && base_conf_.learners().empty()) {
    // No snapshot configuration: the log starts with the bootstrap one (empty
    // for a replica joining an existing cluster: it learns its configuration
    // from the leader's log or snapshot and does not campaign until then).
    std::vector<uint64_t> peers = options_.peers;
    std::sort(peers.begin(), peers.end());
    peers.erase(std::unique(peers.begin(), peers.end()), peers.end());
    for (uint64_t p : peers) {
      base_conf_.add_voters(p);
      auto a = options_.peer_addresses.find(p);
      if (a != options_.peer_addresses.end()) (*base_conf_.mutable_addresses())[p] = a->second;
    }
  }
  for (auto& [index, cs] : init->conf_entries) {
    if (index > storage->SnapshotIndex()) conf_entries_[index] = cs;
  }
  conf_ = conf_entries_.empty() ? base_conf_ : conf_entries_.rbegin()->second;
  prev_hard_ = hard_state();
  BecomeFollower(term_, 0);
  prev_soft_ = SoftState{0, Role::kFollower};
}

pb::HardState Core::hard_state() const {
  pb::HardState hs;
  hs.set_term(term_);
  hs.set_vote(vote_);
  hs.set_commit(log_.committed());
  return hs;
}

bool Core::IsVoter(uint64_t id) const {
  const auto& v = conf_.voters();
  return std::find(v.begin(), v.end(), id) != v.end();
}

bool Core::IsLearner(uint64_t id) const {
  const auto& l = conf_.learners();
  return std::find(l.begin(), l.end(), id) != l.end();
}

pb::ConfState Core::ConfStateAt(uint64_t index) const {
  auto it = conf_entries_.upper_bound(index);
  if (it == conf_entries_.begin()) return base_conf_;
  return std::prev(it)->second;
}

void Core::RebuildConf() {
  conf_ = conf_entries_.empty() ? base_conf_ : conf_entries_.rbegin()->second;
  ++conf_version_;
  if (role_ != Role::kLeader) return;
  // The leader tracks every member (voters and learners) and nobody else.
  std::set<uint64_t> members(conf_.voters().begin(), conf_.voters().end());
  members.insert(conf_.learners().begin(), conf_.learners().end());
  members.insert(id_);
  for (auto it = prs_.begin(); it != prs_.end();) {
    it = members.count(it->first) ? std::next(it) : prs_.erase(it);
  }
  for (uint64_t m : members) {
    if (prs_.count(m)) continue;
    Progress pr(log_.LastIndex() + 1, options_.max_inflight_msgs, options_.max_inflight_bytes);
    // A new member answers soon (it may need a snapshot: allow one).
    pr.recent_active = true;
    prs_.emplace(m, std::move(pr));
  }
  if (lead_transferee_ != 0 && !IsVoter(lead_transferee_)) AbortLeaderTransfer();
}

void Core::TrackConfEntries(uint64_t after,
                            const google::protobuf::RepeatedPtrField<pb::Entry>& entries) {
  bool changed = false;
  const uint64_t last_new = after + entries.size();
  // Configurations at replaced indexes, and beyond the end of a truncated log.
  for (auto it = conf_entries_.upper_bound(after); it != conf_entries_.end();) {
    if (it->first <= last_new || it->first > log_.LastIndex()) {
      it = conf_entries_.erase(it);
      changed = true;
    } else {
      ++it;
    }
  }
  for (const pb::Entry& e : entries) changed |= RecordConfEntry(e);
  if (changed) RebuildConf();
}

bool Core::RecordConfEntry(const pb::Entry& e) {
  if (e.type() != pb::ENTRY_CONF_CHANGE) return false;
  pb::ConfState cs;
  if (!cs.ParseFromString(e.data())) {
    Fatal(absl::StrCat("unparsable configuration entry at index ", e.index(), " term ", e.term()));
  }
  conf_entries_[e.index()] = std::move(cs);
  return true;
}

int Core::Quorum() const { return conf_.voters_size() / 2 + 1; }

// ---- Role transitions ----

void Core::Reset(uint64_t term) {
  if (term_ != term) {
    term_ = term;
    vote_ = 0;
  }
  lead_ = 0;
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  ResetRandomizedElectionTimeout();
  AbortLeaderTransfer();
  votes_.clear();
  prs_.clear();
  std::vector<uint64_t> members(conf_.voters().begin(), conf_.voters().end());
  members.insert(members.end(), conf_.learners().begin(), conf_.learners().end());
  members.push_back(id_);  // a leader being removed still tracks its own log
  for (uint64_t v : members) {
    auto [it, _] = prs_.emplace(
        v, Progress(log_.LastIndex() + 1, options_.max_inflight_msgs, options_.max_inflight_bytes));
    if (v == id_) {
      it->second.match = log_.LastIndex();
      it->second.recent_active = true;
    }
  }
  pending_reads_.clear();
  reads_before_commit_.clear();
}

void Core::ResetRandomizedElectionTimeout() {
  randomized_election_timeout_ =
      options_.election_ticks + static_cast<int>(rng_.Uniform(options_.election_ticks));
}

void Core::BecomeFollower(uint64_t term, uint64_t lead) {
  Reset(term);
  broadcast_pending_ = false;
  lead_ = lead;
  role_ = Role::kFollower;
}

void Core::BecomePreCandidate() {
  // PreVote changes neither term nor vote: a failed pre-campaign leaves no trace.
  role_ = Role::kPreCandidate;
  votes_.clear();
  lead_ = 0;
}

void Core::BecomeCandidate() {
  Reset(term_ + 1);
  vote_ = id_;
  role_ = Role::kCandidate;
}

void Core::BecomeLeader() {
  Reset(term_);
  lead_ = id_;
  role_ = Role::kLeader;
  // §8 / thesis §6.4: an empty entry of the new term lets the leader learn
  // which entries are committed (§5.4.2 forbids counting older ones).
  pb::Entry noop;
  AppendEntries({noop});
  BroadcastAppend();
}

// ---- Timers ----

void Core::Tick() {
  if (role_ == Role::kLeader) {
    TickHeartbeat();
  } else {
    TickElection();
  }
}

bool Core::Promotable() const {
  // A node waiting to install a snapshot has no usable log to campaign with.
  if (log_.unstable_snapshot().has_value()) return false;
  if (IsVoter(id_)) return true;
  // Thesis §4.2.2 (Figure 4.6): a voter whose removal is in its log but not
  // committed may be needed to commit it (it may hold the only copy a majority
  // of the new configuration lacks), so it still campaigns, counting only the
  // new configuration's votes. Once it knows the removal committed, it stops.
  const uint64_t ci = conf_index();
  if (ci == 0 || ci <= log_.committed()) return false;
  const pb::ConfState before = ConfStateAt(ci - 1);
  return std::find(before.voters().begin(), before.voters().end(), id_) != before.voters().end();
}

bool Core::PastElectionTimeout() const { return election_elapsed_ >= randomized_election_timeout_; }

void Core::TickElection() {
  ++election_elapsed_;
  if (Promotable() && PastElectionTimeout()) {
    election_elapsed_ = 0;
    Campaign(options_.pre_vote, /*transfer=*/false);
  }
}

bool Core::QuorumActive() {
  int active = 0;
  for (auto& [pid, pr] : prs_) {
    if (IsVoter(pid) && (pid == id_ || pr.recent_active)) ++active;
    if (pid != id_) pr.recent_active = false;
  }
  return active >= Quorum();
}

void Core::TickHeartbeat() {
  ++heartbeat_elapsed_;
  ++election_elapsed_;
  if (election_elapsed_ >= options_.election_ticks) {
    election_elapsed_ = 0;
    // CheckQuorum: a leader cut off from a majority steps down, so clients
    // stop waiting on it and a new leader can be elected elsewhere.
    if (options_.check_quorum && !QuorumActive()) {
      BecomeFollower(term_, 0);
      return;
    }
    // A transfer that did not finish within an election timeout is abandoned.
    AbortLeaderTransfer();
  }
  if (heartbeat_elapsed_ >= options_.heartbeat_ticks) {
    heartbeat_elapsed_ = 0;
    // Carry the newest pending read's context so a lost round is retried.
    BroadcastHeartbeat(pending_reads_.empty() ? std::string() : pending_reads_.back().context);
  }
}

void Core::Campaign(bool pre_vote, bool transfer) {
  uint64_t term;
  pb::MessageType type;
  if (pre_vote) {
    BecomePreCandidate();
    type = pb::MSG_PRE_VOTE;
    // Ask for the term we would campaign in, without moving to it.
    term = term_ + 1;
  } else {
    BecomeCandidate();
    type = pb::MSG_VOTE;
    term = term_;
  }
  votes_[id_] = true;
  if (TallyVotes(VotersOf(conf_), votes_) == VoteResult::kWon) {
    // Single-node cluster.
    if (pre_vote) {
      Campaign(false, transfer);
    } else {
      BecomeLeader();
    }
    return;
  }
  for (uint64_t v : conf_.voters()) {
    if (v == id_) continue;
    pb::Message m;
    m.set_type(type);
    m.set_to(v);
    m.set_term(term);
    m.set_index(log_.LastIndex());
    m.set_log_term(log_.LastTerm());
    if (transfer) m.set_context(kTransferContext);
    Send(std::move(m));
  }
}

// ---- Step ----

absl::Status Core::Step(const pb::Message& m) {
  if (m.type() == pb::MSG_NONE || !pb::MessageType_IsValid(m.type())) {
    return absl::InvalidArgumentError(absl::StrCat("bad message type ", m.type()));
  }
  const bool local = m.type() == pb::MSG_UNREACHABLE || m.type() == pb::MSG_SNAP_STATUS;
  if (!local && m.from() == 0) return absl::InvalidArgumentError("message without sender");
  if (!local && m.term() == 0) return absl::InvalidArgumentError("message without term");
  if (m.type() == pb::MSG_APP) {
    if (absl::Status s = CheckAppendEntries(m); !s.ok()) return s;
  }

  if (!local && m.term() > term_) {
    if (m.type() == pb::MSG_VOTE || m.type() == pb::MSG_PRE_VOTE) {
      const bool force = m.context() == kTransferContext;
      // Leader stickiness (thesis §4.2.3): while we hear from a live leader,
      // ignore votes, so a partitioned node rejoining cannot depose it.
      const bool in_lease =
          options_.check_quorum && lead_ != 0 && election_elapsed_ < options_.election_ticks;
      if (!force && in_lease) return absl::OkStatus();
    }
    if (m.type() == pb::MSG_PRE_VOTE) {
      // A pre-vote request never changes our term.
    } else if (m.type() == pb::MSG_PRE_VOTE_RESP && !m.reject()) {
      // Granted pre-votes carry the future term; we move to it on winning.
    } else if (m.type() == pb::MSG_APP || m.type() == pb::MSG_HEARTBEAT ||
               m.type() == pb::MSG_SNAP) {
      BecomeFollower(m.term(), m.from());
    } else if (m.type() == pb::MSG_VOTE) {
      // §5.2: only granting the vote restarts the election timer (HandleVote).
      // Otherwise a candidate whose log is behind ours, campaigning again and
      // again, would restart it each time, and we (whose log it needs) would
      // never campaign: a livelock the simulation found with two voters and
      // no PreVote (seed 10278). etcd's raft has the same reset.
      const int elapsed = election_elapsed_;
      BecomeFollower(m.term(), 0);
      election_elapsed_ = elapsed;
    } else {
      BecomeFollower(m.term(), 0);
    }
  } else if (!local && m.term() < term_) {
    if ((options_.check_quorum || options_.pre_vote) &&
        (m.type() == pb::MSG_HEARTBEAT || m.type() == pb::MSG_APP)) {
      // A stale leader that cannot win votes (PreVote) or was ignored by us
      // (CheckQuorum) would otherwise never learn of the new term.
      pb::Message resp;
      resp.set_type(pb::MSG_APP_RESP);
      resp.set_to(m.from());
      Send(std::move(resp));
    } else if (m.type() == pb::MSG_PRE_VOTE) {
      pb::Message resp;
      resp.set_type(pb::MSG_PRE_VOTE_RESP);
      resp.set_to(m.from());
      resp.set_term(term_);
      resp.set_reject(true);
      Send(std::move(resp));
    }
    return absl::OkStatus();
  }

  if (m.type() == pb::MSG_VOTE || m.type() == pb::MSG_PRE_VOTE) {
    HandleVote(m);
    return absl::OkStatus();
  }
  absl::Status s;
  switch (role_) {
    case Role::kLeader:
      s = StepLeader(m);
      MaybeStepDownRemoved();
      break;
    case Role::kPreCandidate:
    case Role::kCandidate:
      s = StepCandidate(m);
      break;
    case Role::kFollower:
      s = StepFollower(m);
      break;
  }
  return s;
}

void Core::MaybeStepDownRemoved() {
  if (role_ != Role::kLeader || IsVoter(id_) || log_.committed() < conf_index()) return;
  // Our removal is committed (thesis §4.2.2): tell the followers so (they
  // learn the commit index from the MsgApps), let the most up-to-date voter
  // take over at once instead of after an election timeout, and step down.
  BroadcastAppend();
  uint64_t best = 0, best_match = 0;
  for (uint64_t v : conf_.voters()) {
    auto it = prs_.find(v);
    if (it != prs_.end() && it->second.match >= best_match) best = v, best_match = it->second.match;
  }
  if (best != 0 && best_match == log_.LastIndex()) {
    pb::Message tn;
    tn.set_type(pb::MSG_TIMEOUT_NOW);
    tn.set_to(best);
    Send(std::move(tn));
  }
  BecomeFollower(term_, 0);
}

void Core::HandleVote(const pb::Message& m) {
  const bool pre = m.type() == pb::MSG_PRE_VOTE;
  // We may vote for the same candidate again (a lost response), for anyone if
  // we have neither voted nor know a leader this term, and pre-vote for a
  // future term freely (it binds nothing).
  const bool can_vote =
      vote_ == m.from() || (vote_ == 0 && lead_ == 0) || (pre && m.term() > term_);
  pb::Message resp;
  resp.set_type(pre ? pb::MSG_PRE_VOTE_RESP : pb::MSG_VOTE_RESP);
  resp.set_to(m.from());
  // §5.4.1: grant only to candidates whose log is at least as up to date.
  if (can_vote && log_.IsUpToDate(m.index(), m.log_term())) {
    resp.set_term(m.term());
    if (!pre) {
      election_elapsed_ = 0;
      vote_ = m.from();
    }
  } else {
    resp.set_term(term_);
    resp.set_reject(true);
  }
  Send(std::move(resp));
}

absl::Status Core::StepLeader(const pb::Message& m) {
  auto it = prs_.find(m.from());
  if (m.type() == pb::MSG_SNAP_STATUS || m.type() == pb::MSG_UNREACHABLE) {
    if (it == prs_.end()) return absl::OkStatus();
    Progress& pr = it->second;
    if (m.type() == pb::MSG_UNREACHABLE) {
      // Stop pipelining into the void; probe again.
      if (pr.state == Progress::State::kReplicate) pr.BecomeProbe();
    } else if (pr.state == Progress::State::kSnapshot) {
      if (m.reject()) pr.pending_snapshot = 0;
      pr.BecomeProbe();
      // Wait for the next heartbeat response before probing again.
      pr.msg_app_probe_sent = true;
    }
    return absl::OkStatus();
  }
  if (it == prs_.end()) return absl::OkStatus();
  Progress& pr = it->second;
  switch (m.type()) {
    case pb::MSG_APP_RESP:
      // A follower acknowledges what this leader sent it (our log does not
      // shrink during our term) or its commit index, which Leader
      // Completeness (§5.4) puts within our log too.
      if (!m.reject() && m.index() > log_.LastIndex()) {
        return absl::InvalidArgumentError(
            absl::StrCat("follower ", m.from(), " acknowledges index ", m.index(),
                         " beyond our last index ", log_.LastIndex()));
      }
      pr.recent_active = true;
      HandleAppendResponse(m, pr);
      break;
    case pb::MSG_HEARTBEAT_RESP:
      pr.recent_active = true;
      HandleHeartbeatResponse(m, pr);
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

absl::Status Core::StepCandidate(const pb::Message& m) {
  switch (m.type()) {
    case pb::MSG_APP:
      BecomeFollower(m.term(), m.from());
      HandleAppendEntries(m);
      break;
    case pb::MSG_HEARTBEAT:
      BecomeFollower(m.term(), m.from());
      HandleHeartbeat(m);
      break;
    case pb::MSG_SNAP:
      BecomeFollower(m.term(), m.from());
      HandleSnapshot(m);
      break;
    case pb::MSG_PRE_VOTE_RESP:
    case pb::MSG_VOTE_RESP: {
      const bool pre = m.type() == pb::MSG_PRE_VOTE_RESP;
      if (pre != (role_ == Role::kPreCandidate)) break;  // from an older campaign
      votes_[m.from()] = !m.reject();
      switch (TallyVotes(VotersOf(conf_), votes_)) {
        case VoteResult::kWon:
          if (pre) {
            Campaign(false, false);
          } else {
            BecomeLeader();
          }
          break;
        case VoteResult::kLost:
          BecomeFollower(term_, 0);
          break;
        case VoteResult::kPending:
          break;
      }
      break;
    }
    default:
      break;
  }
  return absl::OkStatus();
}

absl::Status Core::StepFollower(const pb::Message& m) {
  switch (m.type()) {
    case pb::MSG_APP:
      election_elapsed_ = 0;
      lead_ = m.from();
      HandleAppendEntries(m);
      break;
    case pb::MSG_HEARTBEAT:
      election_elapsed_ = 0;
      lead_ = m.from();
      HandleHeartbeat(m);
      break;
    case pb::MSG_SNAP:
      election_elapsed_ = 0;
      lead_ = m.from();
      HandleSnapshot(m);
      break;
    case pb::MSG_TIMEOUT_NOW:
      // Leadership transfer: campaign at once, skipping PreVote (the leader
      // agreed) and the voters' leader stickiness (kTransferContext).
      if (Promotable()) Campaign(false, /*transfer=*/true);
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

// ---- Follower handlers ----

void Core::HandleAppendEntries(const pb::Message& m) {
  // While a received snapshot waits to be installed, the log is in flux: drop
  // appends (the leader retries) so a Ready never holds a snapshot and entries.
  if (log_.unstable_snapshot()) return;
  pb::Message resp;
  resp.set_type(pb::MSG_APP_RESP);
  resp.set_to(m.from());
  if (m.index() < log_.committed()) {
    resp.set_index(log_.committed());
    Send(std::move(resp));
    return;
  }
  std::vector<pb::Entry> entries(m.entries().begin(), m.entries().end());
  if (auto last_new = log_.MaybeAppend(m.index(), m.log_term(), m.commit(), entries)) {
    TrackConfEntries(m.index(), m.entries());
    resp.set_index(*last_new);
    Send(std::move(resp));
    return;
  }
  // Fast backtracking: point the leader at the last index whose term is <=
  // the term it probed with, skipping a whole conflicting term per round trip.
  const uint64_t hint_index = std::min(m.index(), log_.LastIndex());
  auto [index, term] = log_.FindConflictByTerm(hint_index, m.log_term());
  resp.set_index(m.index());
  resp.set_reject(true);
  resp.set_reject_hint(index);
  resp.set_reject_term(term);
  Send(std::move(resp));
}

void Core::HandleHeartbeat(const pb::Message& m) {
  // The leader sends min(its commit, our match): only entries we acknowledged,
  // and we saved (synced) them before acknowledging. A commit beyond our log
  // means our storage lost them, and such a node could vote for a leader that
  // lacks committed entries (§5.4.1): stop, as etcd does.
  if (m.commit() > log_.LastIndex()) {
    Fatal(absl::StrCat("commit index ", m.commit(), " in a heartbeat from leader ", m.from(),
                       " (term ", m.term(), ") is beyond last index ", log_.LastIndex(),
                       ". Was the raft log corrupted, truncated, or lost?"));
  }
  log_.CommitTo(m.commit());
  pb::Message resp;
  resp.set_type(pb::MSG_HEARTBEAT_RESP);
  resp.set_to(m.from());
  resp.set_context(m.context());
  Send(std::move(resp));
}

void Core::HandleSnapshot(const pb::Message& m) {
  if (log_.unstable_snapshot()) return;
  const auto& md = m.snapshot().metadata();
  pb::Message resp;
  resp.set_type(pb::MSG_APP_RESP);
  resp.set_to(m.from());
  if (md.index() <= log_.committed()) {
    resp.set_index(log_.committed());
  } else if (log_.MatchTerm(md.index(), md.term())) {
    // We already hold the snapshot's last entry: fast-forward commit instead
    // of discarding a log that matches.
    log_.CommitTo(md.index());
    resp.set_index(log_.committed());
  } else {
    log_.Restore(m.snapshot());
    base_conf_ = md.conf_state();
    conf_entries_.clear();
    RebuildConf();
    resp.set_index(log_.LastIndex());
  }
  Send(std::move(resp));
}

// ---- Leader handlers ----

void Core::HandleAppendResponse(const pb::Message& m, Progress& pr) {
  const uint64_t from = m.from();
  if (m.reject()) {
    uint64_t next_probe = m.reject_hint();
    if (m.reject_term() > 0) {
      next_probe = log_.FindConflictByTerm(m.reject_hint(), m.reject_term()).first;
    }
    if (pr.MaybeDecrTo(m.index(), next_probe)) {
      if (pr.state == Progress::State::kReplicate) pr.BecomeProbe();
      MaybeSendAppend(from, true);
    }
    return;
  }
  const bool was_paused = pr.IsPaused();
  if (!pr.MaybeUpdate(m.index())) return;
  switch (pr.state) {
    case Progress::State::kProbe:
      pr.BecomeReplicate();
      break;
    case Progress::State::kSnapshot:
      if (pr.match + 1 >= log_.FirstIndex()) {
        pr.BecomeProbe();
        pr.BecomeReplicate();
      }
      break;
    case Progress::State::kReplicate:
      pr.inflights.FreeLE(m.index());
      break;
  }
  if (MaybeCommit()) {
    // Followers learn the new commit index with the next MsgApp.
    broadcast_pending_ = true;
  } else if (was_paused) {
    MaybeSendAppend(from, false);
  }
  // Fill the window in the replicate state.
  while (MaybeSendAppend(from, false)) {
  }
  if (from == lead_transferee_ && pr.match == log_.LastIndex()) {
    pb::Message tn;
    tn.set_type(pb::MSG_TIMEOUT_NOW);
    tn.set_to(from);
    Send(std::move(tn));
  }
}

void Core::HandleHeartbeatResponse(const pb::Message& m, Progress& pr) {
  pr.msg_app_probe_sent = false;
  if (pr.state == Progress::State::kReplicate && pr.inflights.Full()) pr.inflights.FreeFirstOne();
  if (pr.match < log_.LastIndex()) MaybeSendAppend(m.from(), true);
  if (!m.context().empty()) HandleReadAck(m.from(), m.context());
}

// ---- Sending ----

void Core::Send(pb::Message m) {
  m.set_from(id_);
  const auto t = m.type();
  // Vote requests and responses carry an explicit term (a pre-vote asks for a
  // future one); everything else is stamped with our current term.
  if (t != pb::MSG_VOTE && t != pb::MSG_PRE_VOTE && t != pb::MSG_VOTE_RESP &&
      t != pb::MSG_PRE_VOTE_RESP) {
    m.set_term(term_);
  }
  msgs_.push_back(std::move(m));
}

bool Core::MaybeSendAppend(uint64_t to, bool send_if_empty) {
  auto it = prs_.find(to);
  if (it == prs_.end() || to == id_) return false;
  Progress& pr = it->second;
  if (pr.IsPaused()) return false;

  const uint64_t prev_index = pr.next - 1;
  auto prev_term = log_.Term(prev_index);
  absl::StatusOr<std::vector<pb::Entry>> entries =
      log_.Slice(pr.next, log_.LastIndex() + 1, options_.max_size_per_msg_bytes);
  if (prev_term.ok() && entries.ok()) {
    if (entries->empty() && !send_if_empty) return false;
    pb::Message m;
    m.set_type(pb::MSG_APP);
    m.set_to(to);
    m.set_index(prev_index);
    m.set_log_term(*prev_term);
    m.set_commit(log_.committed());
    uint64_t bytes = 0;
    for (auto& e : *entries) {
      bytes += EntryBytes(e);
      *m.add_entries() = std::move(e);
    }
    const uint64_t last = m.entries_size() ? m.entries(m.entries_size() - 1).index() : prev_index;
    pr.SentEntries(last, bytes, m.entries_size() > 0);
    Send(std::move(m));
    return true;
  }
  // The entries were compacted away: send the snapshot instead, but only to a
  // follower that answered recently (a snapshot is expensive).
  if (!pr.recent_active) return false;
  auto snap = log_.Snapshot();
  if (!snap.ok() || snap->metadata().index() == 0) return false;
  pb::Message m;
  m.set_type(pb::MSG_SNAP);
  m.set_to(to);
  pr.BecomeSnapshot(snap->metadata().index());
  *m.mutable_snapshot() = std::move(*snap);
  Send(std::move(m));
  return true;
}

void Core::SendHeartbeat(uint64_t to, const std::string& context) {
  // The follower may not have our entries up to commit yet; never tell it to
  // commit beyond what it is known to match.
  const uint64_t commit = std::min(prs_.at(to).match, log_.committed());
  pb::Message m;
  m.set_type(pb::MSG_HEARTBEAT);
  m.set_to(to);
  m.set_commit(commit);
  m.set_context(context);
  Send(std::move(m));
}

void Core::BroadcastAppend() {
  for (auto& [pid, pr] : prs_) {
    if (pid != id_) MaybeSendAppend(pid, true);
  }
}

void Core::BroadcastHeartbeat(const std::string& context) {
  for (auto& [pid, pr] : prs_) {
    if (pid != id_) SendHeartbeat(pid, context);
  }
}

bool Core::MaybeCommit() {
  const uint64_t index = CommittedIndex(VotersOf(conf_), [this](uint64_t v) {
    auto it = prs_.find(v);
    return it == prs_.end() ? 0 : it->second.match;
  });
  const bool first_commit_of_term = log_.TermOrZero(log_.committed()) != term_;
  // §5.4.2: only entries of the current term are committed by counting
  // replicas; earlier ones are committed indirectly.
  if (!log_.MaybeCommit(index, term_)) return false;
  if (first_commit_of_term && role_ == Role::kLeader) {
    auto waiting = std::move(reads_before_commit_);
    reads_before_commit_.clear();
    for (auto& [from, ctx] : waiting) StartRead(std::move(ctx));
  }
  return true;
}

bool Core::AppendEntries(std::vector<pb::Entry> entries) {
  uint64_t index = log_.LastIndex();
  for (auto& e : entries) {
    e.set_term(term_);
    e.set_index(++index);
  }
  log_.Append(entries);
  bool conf_changed = false;
  for (const auto& e : entries) conf_changed |= RecordConfEntry(e);
  if (conf_changed) RebuildConf();
  prs_.at(id_).MaybeUpdate(log_.LastIndex());
  MaybeCommit();
  return true;
}

absl::Status Core::Propose(std::string data) {
  if (role_ != Role::kLeader) {
    return absl::UnavailableError(absl::StrCat("not leader; leader=", lead_));
  }
  if (lead_transferee_ != 0) {
    return absl::UnavailableError(
        absl::StrCat("leadership transfer to ", lead_transferee_, " in progress"));
  }
  pb::Entry e;
  e.set_data(std::move(data));
  AppendEntries({std::move(e)});
  broadcast_pending_ = true;
  return absl::OkStatus();
}

// ---- Membership (thesis §4.1 and §4.2) ----

absl::StatusOr<uint64_t> Core::ProposeConfChange(const pb::ConfChange& cc) {
  if (role_ != Role::kLeader) {
    return absl::UnavailableError(absl::StrCat("not leader; leader=", lead_));
  }
  if (lead_transferee_ != 0) {
    return absl::UnavailableError(
        absl::StrCat("leadership transfer to ", lead_transferee_, " in progress"));
  }
  if (log_.TermOrZero(log_.committed()) != term_) {
    return absl::UnavailableError(
        "the leader has not committed an entry of its term yet; retry shortly");
  }
  if (conf_index() > log_.committed()) {
    return absl::UnavailableError(absl::StrCat("the configuration change at index ", conf_index(),
                                               " is not committed yet; retry shortly"));
  }
  const uint64_t node = cc.node_id();
  if (node == 0) return absl::InvalidArgumentError("member id 0 is not valid");
  const bool voter = IsVoter(node), learner = IsLearner(node);
  pb::ConfState next = conf_;
  auto remove_from = [node](google::protobuf::RepeatedField<uint64_t>* ids) {
    ids->erase(std::remove(ids->begin(), ids->end(), node), ids->end());
  };
  auto add_to = [node](google::protobuf::RepeatedField<uint64_t>* ids) {
    ids->Add(node);
    std::sort(ids->begin(), ids->end());
  };
  switch (cc.type()) {
    case pb::CONF_ADD_VOTER:
    case pb::CONF_ADD_LEARNER:
      if (voter || learner) {
        return absl::AlreadyExistsError(
            absl::StrCat("member ", node, " is already a ", voter ? "voter" : "learner"));
      }
      if (std::find(conf_.removed().begin(), conf_.removed().end(), node) !=
          conf_.removed().end()) {
        return absl::FailedPreconditionError(
            absl::StrCat("member id ", node,
                         " was removed from this cluster and cannot be "
                         "used again; add the replacement under a new id"));
      }
      add_to(cc.type() == pb::CONF_ADD_VOTER ? next.mutable_voters() : next.mutable_learners());
      if (!cc.address().empty()) (*next.mutable_addresses())[node] = cc.address();
      break;
    case pb::CONF_PROMOTE: {
      if (voter)
        return absl::AlreadyExistsError(absl::StrCat("member ", node, " is already a voter"));
      if (!learner) return absl::NotFoundError(absl::StrCat("member ", node, " is not a learner"));
      const Progress& pr = prs_.at(node);
      if (pr.match + options_.max_learner_lag < log_.committed()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "learner ", node, " is not caught up yet: it has index ", pr.match,
            ", the leader has committed ", log_.committed(), " (at most ", options_.max_learner_lag,
            " behind may be promoted); retry once it has caught up"));
      }
      remove_from(next.mutable_learners());
      add_to(next.mutable_voters());
      break;
    }
    case pb::CONF_REMOVE:
      if (!voter && !learner) {
        return absl::NotFoundError(absl::StrCat("member ", node, " is not in the configuration"));
      }
      if (voter && conf_.voters_size() == 1) {
        return absl::FailedPreconditionError(
            absl::StrCat("member ", node, " is the last voter; add another one first"));
      }
      remove_from(next.mutable_voters());
      remove_from(next.mutable_learners());
      next.mutable_addresses()->erase(node);
      next.add_removed(node);
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown change type ", cc.type()));
  }
  pb::Entry e;
  e.set_type(pb::ENTRY_CONF_CHANGE);
  e.set_data(next.SerializeAsString());
  AppendEntries({std::move(e)});
  broadcast_pending_ = true;
  return log_.LastIndex();
}

// ---- ReadIndex (thesis §6.4) ----

void Core::ReadIndex(std::string context) {
  if (role_ != Role::kLeader) return;
  if (log_.TermOrZero(log_.committed()) != term_) {
    // Until an entry of our term commits, our commit index may lag the
    // previous leader's: wait.
    reads_before_commit_.emplace_back(id_, std::move(context));
    return;
  }
  StartRead(std::move(context));
}

void Core::StartRead(std::string context) {
  if (conf_.voters_size() == 1 && IsVoter(id_)) {
    read_states_.push_back({log_.committed(), std::move(context)});
    return;
  }
  PendingRead read{log_.committed(), id_, context, {id_}};
  pending_reads_.push_back(std::move(read));
  // Confirm we are still the leader: a heartbeat round acknowledged by a
  // majority proves no newer leader had committed anything at that time.
  BroadcastHeartbeat(context);
}

void Core::HandleReadAck(uint64_t from, const std::string& context) {
  auto it = std::find_if(pending_reads_.begin(), pending_reads_.end(),
                         [&](const PendingRead& r) { return r.context == context; });
  if (it == pending_reads_.end()) return;
  it->acks.insert(from);
  int acked = 0;
  for (uint64_t a : it->acks) acked += IsVoter(a) ? 1 : 0;
  if (acked < Quorum()) return;
  // The ack also confirms every earlier request (it answers a later round).
  auto end = std::next(it);
  for (auto r = pending_reads_.begin(); r != end; ++r) {
    read_states_.push_back({r->index, std::move(r->context)});
  }
  pending_reads_.erase(pending_reads_.begin(), end);
}

// ---- Leadership transfer (thesis §3.10) ----

void Core::TransferLeadership(uint64_t to) {
  if (role_ != Role::kLeader || to == id_ || !prs_.count(to) || !IsVoter(to)) return;
  if (lead_transferee_ == to) return;
  lead_transferee_ = to;
  // The transfer must finish within an election timeout (see TickHeartbeat).
  election_elapsed_ = 0;
  if (prs_.at(to).match == log_.LastIndex()) {
    pb::Message tn;
    tn.set_type(pb::MSG_TIMEOUT_NOW);
    tn.set_to(to);
    Send(std::move(tn));
  } else {
    MaybeSendAppend(to, true);
  }
}

// ---- Ready ----

bool Core::HasReady() const {
  const SoftState soft{lead_, role_};
  const pb::HardState hs = hard_state();
  return !(soft == prev_soft_) || hs.term() != prev_hard_.term() ||
         hs.vote() != prev_hard_.vote() || hs.commit() != prev_hard_.commit() ||
         !log_.unstable_entries().empty() || log_.unstable_snapshot().has_value() ||
         !msgs_.empty() || !read_states_.empty() || log_.HasNextCommittedEntries() ||
         (broadcast_pending_ && role_ == Role::kLeader);
}

Ready Core::GetReady() {
  if (broadcast_pending_ && role_ == Role::kLeader) BroadcastAppend();
  broadcast_pending_ = false;
  Ready rd;
  const SoftState soft{lead_, role_};
  if (!(soft == prev_soft_)) {
    rd.soft_state = soft;
    prev_soft_ = soft;
  }
  const pb::HardState hs = hard_state();
  if (hs.term() != prev_hard_.term() || hs.vote() != prev_hard_.vote() ||
      hs.commit() != prev_hard_.commit()) {
    rd.hard_state = hs;
    // A vote or term must be durable before any response reveals it; the
    // commit index alone can be recomputed after a crash.
    rd.must_sync = hs.term() != prev_hard_.term() || hs.vote() != prev_hard_.vote();
    prev_hard_ = hs;
  }
  rd.entries = log_.unstable_entries();
  if (!rd.entries.empty()) rd.must_sync = true;
  rd.snapshot = log_.unstable_snapshot();
  rd.committed_entries = log_.NextCommittedEntries(options_.max_committed_size_per_ready_bytes);
  rd.messages = std::move(msgs_);
  msgs_.clear();
  rd.read_states = std::move(read_states_);
  read_states_.clear();
  return rd;
}

void Core::Advance(const Ready& rd) {
  if (!rd.entries.empty()) {
    const auto& last = rd.entries.back();
    log_.StableTo(last.index(), last.term());
  }
  if (rd.snapshot) {
    log_.StableSnapTo(rd.snapshot->metadata().index());
    log_.AppliedTo(rd.snapshot->metadata().index());
  }
  if (!rd.committed_entries.empty()) log_.AppliedTo(rd.committed_entries.back().index());
}

}  // namespace ds::raft
