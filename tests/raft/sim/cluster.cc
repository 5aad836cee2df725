#include "tests/raft/sim/cluster.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"

namespace ds::raft::sim {
namespace {

bool IsRequest(pb::MessageType t) {
  return t == pb::MSG_APP || t == pb::MSG_VOTE || t == pb::MSG_PRE_VOTE || t == pb::MSG_HEARTBEAT ||
         t == pb::MSG_SNAP || t == pb::MSG_TIMEOUT_NOW;
}

}  // namespace

std::string MessageSummary(const pb::Message& m) {
  std::string s = absl::StrCat(pb::MessageType_Name(m.type()), " ", m.from(), "->", m.to(), " t",
                               m.term(), " i", m.index(), " lt", m.log_term(), " c", m.commit());
  if (m.entries_size() > 0) {
    absl::StrAppend(&s, " ents[", m.entries(0).index(), "..",
                    m.entries(m.entries_size() - 1).index(), "]");
  }
  if (m.reject()) absl::StrAppend(&s, " REJECT hint", m.reject_hint(), " rt", m.reject_term());
  if (m.has_snapshot()) absl::StrAppend(&s, " snap@", m.snapshot().metadata().index());
  if (!m.context().empty()) absl::StrAppend(&s, " ctx=", m.context());
  return s;
}

Cluster::Cluster(const ClusterOptions& options)
    : options_(options), rng_(options.seed), nodes_(options.nodes) {
  blocked_.assign(options.nodes, std::vector<bool>(options.nodes, false));
  options_.raft.peers.clear();
  const int voters = options.initial_voters > 0 ? options.initial_voters : size();
  for (int i = 0; i < voters; ++i) options_.raft.peers.push_back(i + 1);
  for (int i = 0; i < size(); ++i) {
    nodes_[i].storage = std::make_unique<MemoryStorage>();
    nodes_[i].bootstrap = i < voters;
    Restart(i);
  }
}

Cluster::~Cluster() = default;

void Cluster::Trace(const std::string& line) {
  if (options_.verbose)
    std::printf("%8llu ms  %s\n", static_cast<unsigned long long>(now_ms_), line.c_str());
}

void Cluster::Fail(absl::Status s) {
  if (status_.ok()) {
    status_ = absl::Status(s.code(), absl::StrCat("at ", now_ms_, " ms: ", s.message()));
    Trace(absl::StrCat("VIOLATION: ", status_.message()));
  }
}

void Cluster::Schedule(Event e) {
  e.seq = seq_++;
  events_.push(std::move(e));
}

void Cluster::ScheduleTick(int i, uint64_t delay_ms) {
  Event e{now_ms_ + delay_ms, 0, EventType::kTick, i, nodes_[i].incarnation, {}};
  Schedule(std::move(e));
}

void Cluster::ScheduleDrive(int i) {
  if (nodes_[i].drive_scheduled) return;
  nodes_[i].drive_scheduled = true;
  Schedule(Event{now_ms_, 0, EventType::kDrive, i, nodes_[i].incarnation, {}});
}

void Cluster::RunFor(uint64_t ms) {
  const uint64_t until = now_ms_ + ms;
  while (status_.ok() && !events_.empty() && events_.top().time_ms <= until) {
    Event e = events_.top();
    events_.pop();
    now_ms_ = e.time_ms;
    ProcessEvent(e);
    CheckInvariants();
  }
  now_ms_ = until;
}

void Cluster::ProcessEvent(Event& e) {
  Node& n = nodes_[e.node];
  if (n.core == nullptr || n.incarnation != e.incarnation) {  // crashed meanwhile
    if (e.type == EventType::kDeliver && e.msg.type() == pb::MSG_SNAP) ReportSnapshot(e.msg, true);
    return;
  }
  switch (e.type) {
    case EventType::kTick:
      n.core->Tick();
      ScheduleTick(e.node, options_.tick_ms);
      break;
    case EventType::kDrive:
      n.drive_scheduled = false;
      break;
    case EventType::kLocal:
      if (absl::Status s = n.core->Step(e.msg); !s.ok()) Fail(s);
      break;
    case EventType::kDeliver: {
      // labrpc re-checks the link while the call is in flight.
      const int from = static_cast<int>(e.msg.from()) - 1;
      if (!LinkUp(from, e.node)) {
        Trace(absl::StrCat("drop (link down) ", MessageSummary(e.msg)));
        if (e.msg.type() == pb::MSG_SNAP) ReportSnapshot(e.msg, true);
        return;
      }
      if (e.msg.type() == pb::MSG_SNAP) ReportSnapshot(e.msg, false);
      if (IsRequest(e.msg.type())) ++n.rpcs_received;
      Trace(absl::StrCat("deliver ", MessageSummary(e.msg)));
      if (absl::Status s = n.core->Step(e.msg); !s.ok()) Fail(s);
      break;
    }
  }
  Drive(e.node);
}

void Cluster::ReportSnapshot(const pb::Message& snap, bool failed) {
  const int sender = static_cast<int>(snap.from()) - 1;
  pb::Message status;
  status.set_type(pb::MSG_SNAP_STATUS);
  status.set_from(snap.to());
  status.set_to(snap.from());
  status.set_reject(failed);
  Schedule(Event{now_ms_ + 1, 0, EventType::kLocal, sender, nodes_[sender].incarnation, status});
}

bool Cluster::LinkUp(int from, int to) const {
  return nodes_[from].connected && nodes_[to].connected && !blocked_[from][to];
}

void Cluster::SendMessage(int from, pb::Message m) {
  const int to = static_cast<int>(m.to()) - 1;
  if (to < 0 || to >= size()) return;
  total_bytes_ += m.ByteSizeLong();
  if (!LinkUp(from, to)) {
    if (m.type() == pb::MSG_SNAP) ReportSnapshot(m, true);
    return;
  }
  const bool response = !IsRequest(m.type());
  uint64_t delay = rng_.Range(0, faults_.max_delay_ms);
  if (!faults_.reliable) {
    delay = rng_.Range(0, 26);
    if (rng_.Chance(100)) {
      Trace(absl::StrCat("lose ", MessageSummary(m)));
      if (m.type() == pb::MSG_SNAP) ReportSnapshot(m, true);
      return;
    }
  }
  if (faults_.long_reordering && response && rng_.Uniform(900) < 600) {
    delay = 200 + rng_.Uniform(rng_.Uniform(2000) + 1);
  }
  int copies = 1;
  if (faults_.duplicate_per_mille > 0 && rng_.Chance(faults_.duplicate_per_mille)) copies = 2;
  for (int c = 0; c < copies; ++c) {
    Schedule(Event{now_ms_ + delay + static_cast<uint64_t>(c) * rng_.Range(0, 50), 0,
                   EventType::kDeliver, to, nodes_[to].incarnation, m});
  }
}

void Cluster::Drive(int i) {
  Node& n = nodes_[i];
  while (n.core != nullptr && n.core->HasReady()) {
    Ready rd = n.core->GetReady();
    // 1. Persist before anything that depends on it leaves the node.
    absl::Status s =
        n.storage->Save(rd.hard_state ? &*rd.hard_state : nullptr, rd.entries, rd.must_sync);
    if (!s.ok()) return Fail(s);
    if (rd.snapshot) {
      if (s = n.storage->ApplySnapshot(*rd.snapshot); !s.ok()) return Fail(s);
      RestoreApp(i, *rd.snapshot);
      ++snapshots_installed_;
      Trace(absl::StrCat("node ", i + 1, " installed snapshot @", rd.snapshot->metadata().index()));
    }
    if (rd.soft_state) {
      Trace(absl::StrCat("node ", i + 1, " is ", RoleName(rd.soft_state->role), " term ",
                         n.core->term(), " leader ", rd.soft_state->leader));
    }
    // 2. Send.
    for (auto& m : rd.messages) SendMessage(i, std::move(m));
    // 3. Apply.
    for (const auto& e : rd.committed_entries) Apply(i, e);
    for (const auto& r : rd.read_states) {
      auto it = n.pending_reads.find(r.context);
      if (it == n.pending_reads.end()) {
        Fail(absl::InternalError(absl::StrCat("node ", i + 1, " unknown read ", r.context)));
        continue;
      }
      // Linearizability of ReadIndex: the read point covers every write
      // committed (anywhere) before the read was requested.
      if (r.index < it->second) {
        Fail(absl::InternalError(absl::StrCat("stale read ", r.context, " at index ", r.index,
                                              " < ", it->second, " committed before it")));
      }
      ++read_states_checked_;
      n.pending_reads.erase(it);
    }
    n.core->Advance(rd);
    if (!status_.ok()) return;
  }
}

std::string Cluster::SnapshotData(const App& app) const {
  // The snapshot of the test application: every command applied so far, as
  // 6.824's applierSnap snapshots its whole log.
  pb::Message holder;
  holder.set_index(app.last_applied);
  for (const auto& [index, data] : app.commands) {
    pb::Entry* e = holder.add_entries();
    e->set_index(index);
    e->set_data(data);
  }
  return holder.SerializeAsString();
}

void Cluster::RestoreApp(int i, const pb::Snapshot& snap) {
  App& app = nodes_[i].app;
  pb::Message holder;
  if (!holder.ParseFromString(snap.data()) || holder.index() != snap.metadata().index()) {
    return Fail(absl::InternalError(
        absl::StrCat("node ", i + 1, " snapshot doesn't match index ", snap.metadata().index())));
  }
  for (const auto& e : holder.entries()) app.commands[e.index()] = e.data();
  app.last_applied = snap.metadata().index();
}

void Cluster::Apply(int i, const pb::Entry& e) {
  App& app = nodes_[i].app;
  if (e.index() != app.last_applied + 1) {
    return Fail(absl::InternalError(absl::StrCat("node ", i + 1, " apply out of order: ", e.index(),
                                                 " after ", app.last_applied)));
  }
  if (absl::Status s = checker_.OnApply(i + 1, nodes_[i].core->term(), e); !s.ok()) return Fail(s);
  app.last_applied = e.index();
  app.commands[e.index()] = e.data();  // no-op entries too (as "")
  if (options_.snapshot_interval > 0 && (e.index() + 1) % options_.snapshot_interval == 0) {
    absl::Status s =
        nodes_[i].storage->CreateSnapshot(e.index(), nodes_[i].core->ConfStateAt(e.index()),
                                          SnapshotData(app), options_.log_retention);
    if (!s.ok() && s.code() != absl::StatusCode::kFailedPrecondition) Fail(s);
  }
}

void Cluster::CheckInvariants() {
  std::vector<const Core*> cores;
  for (auto& n : nodes_) cores.push_back(n.core.get());
  if (absl::Status s = checker_.Check(cores); !s.ok()) Fail(s);
}

// ---- Faults ----

void Cluster::Disconnect(int i) {
  Trace(absl::StrCat("disconnect ", i + 1));
  nodes_[i].connected = false;
}

void Cluster::Connect(int i) {
  Trace(absl::StrCat("connect ", i + 1));
  nodes_[i].connected = true;
}

void Cluster::BlockLink(int from, int to, bool blocked) {
  Trace(absl::StrCat(blocked ? "block " : "unblock ", from + 1, "->", to + 1));
  blocked_[from][to] = blocked;
}

void Cluster::HealLinks() {
  for (auto& row : blocked_) std::fill(row.begin(), row.end(), false);
}

void Cluster::Crash(int i) {
  Node& n = nodes_[i];
  if (n.core == nullptr) return;
  Trace(absl::StrCat("crash ", i + 1));
  n.core.reset();
  n.storage->SimulateCrash();
  ++n.incarnation;  // in-flight deliveries and timers of the old incarnation die
  n.drive_scheduled = false;
  n.pending_reads.clear();
}

void Cluster::Restart(int i) {
  Crash(i);
  Node& n = nodes_[i];
  Trace(absl::StrCat("restart ", i + 1));
  Options o = options_.raft;
  if (!n.bootstrap) o.peers.clear();
  o.seed = options_.seed * 1000003 + i * 7919 + n.incarnation;
  // As 6.824's start1: the application ingests its snapshot before Raft starts.
  n.app.last_applied = 0;
  auto snap = n.storage->GetSnapshot();
  if (snap.ok() && snap->metadata().index() > 0) RestoreApp(i, *snap);
  n.core = std::make_unique<Core>(i + 1, o, n.storage.get());
  checker_.OnRestart(i + 1);
  // Spread the nodes' tick phases.
  ScheduleTick(i, 1 + rng_.Uniform(options_.tick_ms));
}

// ---- API ----

Cluster::StartResult Cluster::Start(int i, std::string command) {
  Node& n = nodes_[i];
  StartResult r;
  if (n.core == nullptr) return r;
  if (!n.core->Propose(std::move(command)).ok()) return r;
  r.is_leader = true;
  r.index = n.core->last_index();
  r.term = n.core->term();
  Trace(absl::StrCat("node ", i + 1, " accepted proposal at ", r.index));
  // Drive later at the same virtual instant, so concurrent Starts batch.
  ScheduleDrive(i);
  return r;
}

void Cluster::ReadIndex(int i, std::string context) {
  Node& n = nodes_[i];
  if (n.core == nullptr) return;
  n.pending_reads[context] = checker_.max_committed();
  n.core->ReadIndex(std::move(context));
  ScheduleDrive(i);
}

void Cluster::TransferLeadership(int i, int to) {
  Node& n = nodes_[i];
  if (n.core == nullptr) return;
  Trace(absl::StrCat("node ", i + 1, " asked to transfer leadership to ", to + 1));
  n.core->TransferLeadership(to + 1);
  ScheduleDrive(i);
}

absl::StatusOr<uint64_t> Cluster::ChangeMembership(int i, const pb::ConfChange& change) {
  Node& n = nodes_[i];
  if (n.core == nullptr) return absl::UnavailableError("crashed");
  absl::StatusOr<uint64_t> r = n.core->ProposeConfChange(change);
  Trace(absl::StrCat("node ", i + 1, " asked to ", pb::ConfChangeType_Name(change.type()), " ",
                     change.node_id(), ": ",
                     r.ok() ? absl::StrCat("index ", *r) : r.status().ToString()));
  if (r.ok()) ScheduleDrive(i);
  return r;
}

std::pair<uint64_t, bool> Cluster::GetState(int i) const {
  const Node& n = nodes_[i];
  if (n.core == nullptr) return {0, false};
  return {n.core->term(), n.core->role() == Role::kLeader};
}

absl::StatusOr<int> Cluster::CheckOneLeader() {
  for (int iter = 0; iter < 10; ++iter) {
    RunFor(450 + rng_.Uniform(100));
    if (!status_.ok()) return status_;
    std::map<uint64_t, std::vector<int>> leaders;
    for (int i = 0; i < size(); ++i) {
      if (!connected(i) || !alive(i)) continue;
      auto [term, is_leader] = GetState(i);
      if (is_leader) leaders[term].push_back(i);
    }
    if (leaders.empty()) continue;
    for (auto& [term, ls] : leaders) {
      if (ls.size() > 1) {
        return absl::InternalError(absl::StrCat("term ", term, " has ", ls.size(), " leaders"));
      }
    }
    return leaders.rbegin()->second[0];
  }
  return absl::InternalError("expected one leader, got none");
}

absl::Status Cluster::CheckNoLeader() {
  for (int i = 0; i < size(); ++i) {
    if (connected(i) && alive(i) && GetState(i).second) {
      return absl::InternalError(absl::StrCat("expected no leader among connected servers, but ", i,
                                              " claims to be leader"));
    }
  }
  return status_;
}

absl::StatusOr<uint64_t> Cluster::CheckTerms() {
  uint64_t term = 0;
  for (int i = 0; i < size(); ++i) {
    if (!connected(i) || !alive(i)) continue;
    const uint64_t t = GetState(i).first;
    if (term == 0) {
      term = t;
    } else if (term != t) {
      return absl::InternalError("servers disagree on term");
    }
  }
  return term;
}

int Cluster::NCommitted(uint64_t index, std::string* command) {
  int count = 0;
  for (auto& n : nodes_) {
    auto it = n.app.commands.find(index);
    if (it == n.app.commands.end()) continue;
    if (count > 0 && *command != it->second) {
      Fail(absl::InternalError(absl::StrCat("committed values do not match at index ", index)));
    }
    *command = it->second;
    ++count;
  }
  return count;
}

absl::StatusOr<uint64_t> Cluster::One(std::string command, int n, bool retry) {
  const uint64_t t0 = now_ms_;
  int starts = 0;
  while (now_ms_ - t0 < 10000 && status_.ok()) {
    uint64_t index = 0;
    for (int k = 0; k < size(); ++k) {
      starts = (starts + 1) % size();
      if (!alive(starts) || !connected(starts)) continue;
      StartResult r = Start(starts, command);
      if (r.is_leader) {
        index = r.index;
        break;
      }
    }
    if (index != 0) {
      const uint64_t t1 = now_ms_;
      while (now_ms_ - t1 < 2000 && status_.ok()) {
        std::string got;
        const int nd = NCommitted(index, &got);
        if (nd > 0 && nd >= n && got == command) return index;
        RunFor(20);
      }
      if (!retry) break;
    } else {
      RunFor(50);
    }
  }
  if (!status_.ok()) return status_;
  return absl::DeadlineExceededError(
      absl::StrCat("one(", command.substr(0, 20), ") failed to reach agreement"));
}

absl::StatusOr<std::optional<std::string>> Cluster::Wait(uint64_t index, int n,
                                                         uint64_t start_term) {
  uint64_t backoff = 10;
  for (int iter = 0; iter < 30; ++iter) {
    std::string got;
    if (NCommitted(index, &got) >= n) return std::optional<std::string>(got);
    RunFor(backoff);
    if (!status_.ok()) return status_;
    if (backoff < 1000) backoff *= 2;
    if (start_term != 0) {
      for (int i = 0; i < size(); ++i) {
        if (alive(i) && GetState(i).first > start_term) return std::optional<std::string>();
      }
    }
  }
  std::string got;
  return absl::DeadlineExceededError(
      absl::StrCat("only ", NCommitted(index, &got), " decided for index ", index, "; wanted ", n));
}

uint64_t Cluster::TotalRpcs() const {
  uint64_t total = 0;
  for (const auto& n : nodes_) total += n.rpcs_received;
  return total;
}

uint64_t Cluster::LogSize() {
  uint64_t m = 0;
  for (auto& n : nodes_) m = std::max(m, n.storage->RaftStateBytes());
  return m;
}

uint64_t Cluster::SnapshotSize() {
  uint64_t m = 0;
  for (auto& n : nodes_) m = std::max(m, n.storage->SnapshotBytes());
  return m;
}

}  // namespace ds::raft::sim
