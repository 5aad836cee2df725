// Core: the pure Raft consensus state machine (no threads, clock, sockets or
// disk). The driver feeds it ticks, messages and proposals and executes the
// effects it hands back in a Ready batch, in this order:
//
//   if (core.HasReady()) {
//     Ready rd = core.GetReady();
//     storage->Save(rd.hard_state ? &*rd.hard_state : nullptr, rd.entries, rd.must_sync);
//     if (rd.snapshot) { storage->ApplySnapshot(*rd.snapshot); app.Restore(*rd.snapshot); }
//     send(rd.messages);                      // only after Save: they depend on it
//     apply(rd.committed_entries);            // in order
//     core.Advance(rd);
//   }
//
// A Ready that carries a snapshot carries no entries (MsgApps are dropped while
// a received snapshot waits to be installed), so Save-then-ApplySnapshot is safe.
// Application snapshots go to Storage::CreateSnapshot() from the driver; the
// core notices the compaction through Storage::FirstIndex() and sends MsgSnap to
// followers that need discarded entries.
//
// The leader counts its own unsaved entries toward commit at once; this is safe
// because a follower can only acknowledge entries sent in an earlier Ready,
// which the driver saved before stepping anything else.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "proto/raft.pb.h"
#include "raft/core/log.h"
#include "raft/core/options.h"
#include "raft/core/progress.h"
#include "raft/core/quorum.h"
#include "raft/core/rng.h"
#include "raft/storage/storage.h"

namespace ds::raft {

// A ReadIndex result: a linearizable read issued with `context` is safe once the
// local state machine has applied at least `index`.
struct ReadState {
  uint64_t index = 0;
  std::string context;
};

enum class Role { kFollower, kPreCandidate, kCandidate, kLeader };
const char* RoleName(Role role);

struct SoftState {
  uint64_t leader = 0;  // 0: unknown
  Role role = Role::kFollower;
  bool operator==(const SoftState&) const = default;
};

struct Ready {
  std::optional<SoftState> soft_state;      // changed since the last Ready
  std::optional<pb::HardState> hard_state;  // changed: persist
  std::vector<pb::Entry> entries;           // persist (Storage::Save) BEFORE sending messages
  std::optional<pb::Snapshot> snapshot;     // from the leader: Storage::ApplySnapshot + app restore
  std::vector<pb::Entry> committed_entries;  // apply, in order
  std::vector<pb::Message> messages;         // send after persisting
  std::vector<ReadState> read_states;        // safe to serve once applied >= index
  // Entries or a vote/term change must be durable before the messages go out.
  // A commit-index-only change may be written without fsync.
  bool must_sync = false;
};

// Checks what the Core restores from `storage` for states only corruption
// (or a driver bug) produces: GetInitialState failing, FirstIndex() past
// LastIndex() + 1, a hard-state commit index beyond the last entry. Returns
// kDataLoss naming the indexes. The Core fail-stops on the same conditions;
// drivers (Node::Start) call this first so corrupt storage is an error.
absl::Status CheckStorageForRestart(Storage& storage);

class Core {
 public:
  // Restores term, vote, commit, configuration and log from `storage`, which
  // must outlive the core. Starts as a follower. Fail-stops (Fatal) if
  // CheckStorageForRestart(*storage) fails.
  Core(uint64_t id, const Options& options, Storage* storage);

  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  // Advances logical time by one tick (election or heartbeat timers).
  void Tick();
  // A message from a peer, or a local report (MSG_UNREACHABLE, MSG_SNAP_STATUS
  // with reject = true on failure). kInvalidArgument on a malformed message
  // (e.g. MsgApp entries that do not follow its index, an acknowledgement
  // beyond our log), which is then ignored.
  absl::Status Step(const pb::Message& msg);
  // Appends `data` to the log. kUnavailable when not the leader (or while a
  // leadership transfer is in progress); the caller retries at leader().
  absl::Status Propose(std::string data);
  // Requests a linearizable read point; the answer arrives as a ReadState in a
  // later Ready (never, if leadership is lost: the caller times out and retries).
  // Only the leader serves reads (the wire protocol has no forwarding message):
  // on a follower the request is dropped and the caller retries at leader().
  void ReadIndex(std::string context);
  // Asks the leader to hand leadership to `to` (MsgTimeoutNow once `to` is up
  // to date). Ignored on non-leaders and if `to` is not a voter.
  void TransferLeadership(uint64_t to);
  // Appends a membership change (one server at a time, thesis §4.1) as an
  // ENTRY_CONF_CHANGE holding the whole new configuration, which every replica
  // uses as soon as the entry is in its log. kUnavailable (retry, at
  // leader() if not us) when not the leader, during a leadership transfer,
  // before an entry of this leader's term is committed (Ongaro's 2015 fix:
  // otherwise two changes from different leaders could both commit with
  // disjoint majorities) or while another change is uncommitted;
  // kAlreadyExists / kNotFound for a member that is / is not there;
  // kFailedPrecondition to remove the last voter, to add back a removed id
  // (ids are never reused) or to promote a learner that is not caught up
  // (Options::max_learner_lag); kInvalidArgument for node 0.
  // On success returns the entry's index.
  absl::StatusOr<uint64_t> ProposeConfChange(const pb::ConfChange& change);

  bool HasReady() const;
  Ready GetReady();
  // The driver has persisted, sent and applied everything in `rd`. Exactly one
  // Ready may be outstanding: call Advance() before the next GetReady().
  void Advance(const Ready& rd);

  uint64_t id() const { return id_; }
  uint64_t term() const { return term_; }
  uint64_t vote() const { return vote_; }
  Role role() const { return role_; }
  uint64_t leader() const { return lead_; }
  uint64_t commit() const { return log_.committed(); }
  uint64_t applied() const { return log_.applied(); }
  uint64_t last_index() const { return log_.LastIndex(); }
  uint64_t first_index() const { return log_.FirstIndex(); }
  // The configuration in use: the newest one in the log (committed or not),
  // else the snapshot's, else the bootstrap one from Options::peers.
  const pb::ConfState& conf_state() const { return conf_; }
  // The configuration as of log index `index` (>= the snapshot index): what a
  // snapshot taken at `index` must record.
  pb::ConfState ConfStateAt(uint64_t index) const;
  // Index of the newest configuration entry in the log (0: none since the
  // snapshot). Above commit() means a change is in progress.
  uint64_t conf_index() const { return conf_entries_.empty() ? 0 : conf_entries_.rbegin()->first; }
  // Configuration entries in the log by index (those the driver compacted
  // away may still be listed).
  const std::map<uint64_t, pb::ConfState>& conf_entries() const { return conf_entries_; }
  bool IsVoter(uint64_t id) const;
  bool IsLearner(uint64_t id) const;
  // Changes whenever conf_state() may have changed (cheap to poll).
  uint64_t conf_version() const { return conf_version_; }
  pb::HardState hard_state() const;
  // Progress of every peer (meaningful on the leader only).
  const ProgressMap& progress() const { return prs_; }
  // Read-only view of the log, for the invariant checker and tests.
  const RaftLog& log() const { return log_; }

 private:
  // Role transitions.
  void BecomeFollower(uint64_t term, uint64_t lead);
  void BecomePreCandidate();
  void BecomeCandidate();
  void BecomeLeader();
  void Reset(uint64_t term);
  void ResetRandomizedElectionTimeout();

  void TickElection();
  void TickHeartbeat();
  void Campaign(bool pre_vote, bool transfer);
  bool Promotable() const;
  bool PastElectionTimeout() const;

  // One step function per role.
  absl::Status StepLeader(const pb::Message& m);
  absl::Status StepCandidate(const pb::Message& m);
  absl::Status StepFollower(const pb::Message& m);

  void HandleAppendEntries(const pb::Message& m);
  void HandleHeartbeat(const pb::Message& m);
  void HandleSnapshot(const pb::Message& m);
  void HandleAppendResponse(const pb::Message& m, Progress& pr);
  void HandleHeartbeatResponse(const pb::Message& m, Progress& pr);
  void HandleVote(const pb::Message& m);
  void StartRead(std::string context);
  void HandleReadAck(uint64_t from, const std::string& context);
  bool QuorumActive();

  void Send(pb::Message m);
  // Sends MsgApp (or MsgSnap) to `to` if its progress allows; returns whether
  // something was sent. With send_if_empty, an empty MsgApp probes.
  bool MaybeSendAppend(uint64_t to, bool send_if_empty);
  void SendHeartbeat(uint64_t to, const std::string& context);
  void BroadcastAppend();
  void BroadcastHeartbeat(const std::string& context);
  bool MaybeCommit();
  bool AppendEntries(std::vector<pb::Entry> entries);
  int Quorum() const;
  // conf_ = the newest configuration (conf_entries_, else base_conf_), then
  // the leader's progress map follows it.
  void RebuildConf();
  // Entries (after, after + n] of `entries` are now in the log, replacing
  // whatever was there, and nothing beyond LastIndex() remains: keep
  // conf_entries_ in step.
  void TrackConfEntries(uint64_t after,
                        const google::protobuf::RepeatedPtrField<pb::Entry>& entries);
  // Records `e` in conf_entries_ if it is a configuration entry (Fatal if it
  // does not parse); returns whether it was one.
  bool RecordConfEntry(const pb::Entry& e);
  // A leader whose removal committed hands over (MsgTimeoutNow to the most
  // up-to-date voter) and steps down.
  void MaybeStepDownRemoved();
  void AbortLeaderTransfer() { lead_transferee_ = 0; }

  const uint64_t id_;
  const Options options_;
  Rng rng_;
  RaftLog log_;
  pb::ConfState conf_;
  // The configuration as of the log's start (snapshot or bootstrap) and the
  // configuration entries after it, by index.
  pb::ConfState base_conf_;
  uint64_t conf_version_ = 1;
  std::map<uint64_t, pb::ConfState> conf_entries_;

  uint64_t term_ = 0;
  uint64_t vote_ = 0;
  uint64_t lead_ = 0;
  Role role_ = Role::kFollower;
  ProgressMap prs_;
  // Votes received in the current (pre-)campaign: peer -> granted.
  std::map<uint64_t, bool> votes_;

  int election_elapsed_ = 0;
  int heartbeat_elapsed_ = 0;
  int randomized_election_timeout_ = 0;
  uint64_t lead_transferee_ = 0;

  // ReadIndex on the leader: requests waiting for a heartbeat quorum, in order.
  struct PendingRead {
    uint64_t index;
    uint64_t from;  // requester (ourselves or a forwarding follower)
    std::string context;
    std::set<uint64_t> acks;
  };
  std::deque<PendingRead> pending_reads_;
  // ReadIndex requests made before this leader committed an entry of its term
  // (§6.4: the commit index is only known to be current after that).
  std::vector<std::pair<uint64_t, std::string>> reads_before_commit_;

  // Set by Propose and by commit advances: one MsgApp per follower is sent at
  // the next GetReady, so proposals made together travel together.
  bool broadcast_pending_ = false;
  std::vector<pb::Message> msgs_;
  std::vector<ReadState> read_states_;
  SoftState prev_soft_;
  pb::HardState prev_hard_;
};

}  // namespace ds::raft
