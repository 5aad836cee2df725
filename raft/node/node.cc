#include "raft/node/node.h"

#include <chrono>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/init.h"
#include "common/metrics.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace ds::raft {
namespace {

constexpr char kLeaderPayload[] = "type.googleapis.com/ds.raft.LeaderHint";

}  // namespace

NodeMetrics NodeMetrics::Register(prometheus::Registry& registry) {
  NodeMetrics m;
  m.proposals = &prometheus::BuildCounter()
                     .Name("dstack_raft_proposals_total")
                     .Help("Commands appended to the Raft log by this replica as leader")
                     .Register(registry)
                     .Add({});
  m.sync_seconds = &prometheus::BuildHistogram()
                        .Name("dstack_raft_storage_sync_duration_seconds")
                        .Help("Durable writes of Raft state (one fsync'd batch per loop iteration)")
                        .Register(registry)
                        .Add({}, common::LatencyBucketsSeconds());
  m.apply_seconds = &prometheus::BuildHistogram()
                         .Name("dstack_raft_apply_duration_seconds")
                         .Help(
                             "Applying one batch of committed entries (or a snapshot) to the "
                             "state machine")
                         .Register(registry)
                         .Add({}, common::LatencyBucketsSeconds());
  m.applied_entries = &prometheus::BuildCounter()
                           .Name("dstack_raft_applied_entries_total")
                           .Help("Committed log entries handed to the state machine")
                           .Register(registry)
                           .Add({});
  auto& snapshots = prometheus::BuildCounter()
                        .Name("dstack_raft_snapshots_total")
                        .Help(
                            "Snapshots taken here (origin=local) or installed from the leader "
                            "(origin=leader)")
                        .Register(registry);
  m.snapshots_local = &snapshots.Add({{"origin", "local"}});
  m.snapshots_from_leader = &snapshots.Add({{"origin", "leader"}});
  m.snapshot_bytes = &prometheus::BuildCounter()
                          .Name("dstack_raft_snapshot_written_bytes_total")
                          .Help("Data bytes of the snapshots taken or installed")
                          .Register(registry)
                          .Add({});
  return m;
}

absl::Status NotLeaderError(uint64_t leader) {
  absl::Status s = absl::UnavailableError(absl::StrCat("not leader; leader=", leader));
  s.SetPayload(kLeaderPayload, absl::Cord(absl::StrCat(leader)));
  return s;
}

uint64_t LeaderHint(const absl::Status& status) {
  auto payload = status.GetPayload(kLeaderPayload);
  uint64_t leader = 0;
  if (!payload || !absl::SimpleAtoi(std::string(*payload), &leader)) return 0;
  return leader;
}

absl::StatusOr<std::unique_ptr<Node>> Node::Start(NodeOptions options,
                                                  std::unique_ptr<Storage> storage,
                                                  std::unique_ptr<Transport> transport,
                                                  ApplyFn apply) {
  if (options.id == 0) return absl::InvalidArgumentError("node id must be non-zero");
  if (storage == nullptr || transport == nullptr || !apply) {
    return absl::InvalidArgumentError("storage, transport and apply are required");
  }
  if (options.tick_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("tick_interval must be positive");
  }
  // Corrupt storage is an error here rather than the core's fail-stop.
  if (absl::Status s = CheckStorageForRestart(*storage); !s.ok()) return s;
  std::unique_ptr<Node> node(
      new Node(std::move(options), std::move(storage), std::move(transport), std::move(apply)));
  Node* n = node.get();
  // The application starts empty: first it restores the local snapshot, then
  // the core re-delivers the committed log after it.
  if (n->storage_->SnapshotIndex() > 0) {
    absl::StatusOr<pb::Snapshot> snap = n->storage_->GetSnapshot();
    if (!snap.ok()) return snap.status();
    ApplyBatch restore;
    restore.snapshot = std::move(*snap);
    absl::MutexLock lock(&n->mu_);
    n->apply_queue_.push_back(std::move(restore));
  }
  // Status is meaningful from the start (restored term, snapshot, log).
  n->PublishStatus();
  n->transport_->Start([n](pb::Message m) {
    if (m.type() == pb::MSG_SNAP && n->options_.snapshot_gate != nullptr &&
        !n->options_.snapshot_gate->Admit(m, [n](pb::Message ready) {
          absl::MutexLock lock(&n->mu_);
          if (!n->stop_) n->inbox_.push_back(std::move(ready));
        })) {
      return;  // the gate delivers it once its files are here
    }
    absl::MutexLock lock(&n->mu_);
    n->inbox_.push_back(std::move(m));
  });
  n->raft_thread_ = std::thread([n] { n->RunRaft(); });
  n->apply_thread_ = std::thread([n] { n->RunApply(); });
  return node;
}

Node::Node(NodeOptions options, std::unique_ptr<Storage> storage,
           std::unique_ptr<Transport> transport, ApplyFn apply)
    : options_(std::move(options)),
      log_(options_.logger ? options_.logger
                           : common::MakeLogger(absl::StrCat("raft-", options_.id))),
      storage_(std::move(storage)),
      transport_(std::move(transport)),
      apply_(std::move(apply)) {
  core_ = std::make_unique<Core>(options_.id, options_.raft, storage_.get());
}

Node::~Node() { Stop(); }

void Node::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_ && !raft_thread_.joinable() && !apply_thread_.joinable()) return;
    stop_ = true;
  }
  // Incoming messages first, so nothing races the shutdown of the loop.
  transport_->Stop();
  if (options_.snapshot_gate != nullptr) options_.snapshot_gate->Stop();
  if (raft_thread_.joinable()) raft_thread_.join();
  if (apply_thread_.joinable()) apply_thread_.join();
}

bool Node::HasWorkLocked() const {
  return stop_ || !inbox_.empty() || !proposals_.empty() || !read_requests_.empty() ||
         !transfers_.empty() || !snapshot_requests_.empty();
}

void Node::RunRaft() {
  absl::Time next_tick = absl::Now() + options_.tick_interval;
  bool more_ready = false;
  std::vector<pb::Message> inbox;
  std::vector<PendingProposal> proposals;
  std::vector<std::string> reads;
  std::vector<uint64_t> transfers;
  std::vector<std::shared_ptr<SnapshotRequest>> snapshots;
  std::vector<ReadAnswer> answers;
  bool failed = false;
  while (!failed) {
    {
      absl::MutexLock lock(&mu_);
      if (!more_ready) {
        mu_.AwaitWithDeadline(absl::Condition(this, &Node::HasWorkLocked), next_tick);
      }
      if (stop_) break;

      inbox.swap(inbox_);
      while (!proposals_.empty() && proposals.size() < options_.max_proposals_per_ready) {
        proposals.push_back(std::move(proposals_.front()));
        proposals_.pop_front();
      }
      reads.swap(read_requests_);
      transfers.swap(transfers_);
      snapshots.swap(snapshot_requests_);
    }

    ++loops_;
    const absl::Time now = absl::Now();
    if (now >= next_tick) {
      core_->Tick();
      next_tick += options_.tick_interval;
      // After a stall (a long fsync, a paused process) tick once, not once per
      // missed period: a burst of ticks would fire an election at once.
      if (next_tick <= now) next_tick = now + options_.tick_interval;
    }
    for (const pb::Message& m : inbox) {
      if (absl::Status s = core_->Step(m); !s.ok()) {
        log_->debug("dropping message type {} from {}: {}", static_cast<int>(m.type()), m.from(),
                    s.ToString());
      }
    }
    uint64_t appended = 0;
    for (auto& p : proposals) {
      absl::Status s;
      if (p.conf_change) {
        absl::StatusOr<uint64_t> index = core_->ProposeConfChange(*p.conf_change);
        s = index.status();
        if (s.ok()) {
          log_->info("proposed membership change {} at index {}", p.conf_change->ShortDebugString(),
                     *index);
        }
      } else {
        s = core_->Propose(std::move(p.data));
      }
      if (s.ok()) {
        p.result = {core_->last_index(), core_->term()};
        ++appended;
      } else if (s.code() == absl::StatusCode::kUnavailable &&
                 (core_->role() != Role::kLeader || !p.conf_change)) {
        p.status = NotLeaderError(core_->leader());
      } else {
        p.status = s;  // a membership change to retry later, or refused
      }
    }
    if (!reads.empty()) {
      if (core_->role() == Role::kLeader) {
        std::string batch = reads.front();
        {
          absl::MutexLock lock(&mu_);
          read_batches_[batch] = std::move(reads);
        }
        core_->ReadIndex(std::move(batch));
      } else {
        absl::MutexLock lock(&mu_);
        FailReadsLocked(reads, &answers);
      }
    }
    if (appended > 0 && options_.metrics != nullptr) {
      options_.metrics->proposals->Increment(static_cast<double>(appended));
    }
    for (uint64_t to : transfers) core_->TransferLeadership(to);
    for (auto& req : snapshots) DoSnapshot(req.get());

    if (core_->HasReady()) failed = !HandleReady(&answers);
    more_ready = core_->HasReady();

    // Published before the callers wake, so they see their own effect.
    PublishStatus();
    // Proposals learn their (index, term) now: they were appended to the
    // in-memory log and, if HandleReady ran, persisted.
    for (auto& p : proposals) {
      if (p.status.ok()) {
        p.done(p.result);
      } else {
        p.done(std::move(p.status));
      }
    }
    for (auto& req : snapshots) req->done.Notify();
    for (ReadAnswer& a : answers) a.done(std::move(a.result));
    answers.clear();
    inbox.clear();
    proposals.clear();
    reads.clear();
    transfers.clear();
    snapshots.clear();
  }

  // Fail whatever is still waiting for the loop.
  std::deque<PendingProposal> abandoned;
  std::map<std::string, ReadIndexCallback> abandoned_reads;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    abandoned.swap(proposals_);
    abandoned_reads.swap(reads_);
    read_requests_.clear();
    read_batches_.clear();
    for (auto& req : snapshot_requests_) {
      req->status = absl::UnavailableError("raft node stopped");
      req->done.Notify();
    }
    snapshot_requests_.clear();
  }
  for (auto& p : abandoned) p.done(absl::UnavailableError("raft node stopped"));
  for (auto& [ctx, done] : abandoned_reads) done(absl::UnavailableError("raft node stopped"));
}

bool Node::HandleReady(std::vector<ReadAnswer>* answers) {
  Ready rd = core_->GetReady();
  // Before sending: a member just added must be known to the transport.
  RefreshConf();
  // Thesis §10.2.1: a leader may write its log in parallel with replicating
  // it. The core counts the leader's own new entries toward a commit at once;
  // that is safe only because this Save completes before the followers'
  // acknowledgements are stepped (a later iteration) and before committed
  // entries reach the application. Everything else (votes, responses,
  // anything a follower or candidate sends) waits for the disk.
  if (core_->role() == Role::kLeader && !rd.messages.empty()) {
    std::vector<pb::Message> early;
    std::vector<pb::Message> late;
    for (pb::Message& m : rd.messages) {
      const bool independent =
          m.type() == pb::MSG_APP || m.type() == pb::MSG_HEARTBEAT || m.type() == pb::MSG_SNAP;
      (independent ? early : late).push_back(std::move(m));
    }
    rd.messages = std::move(late);
    if (!early.empty()) transport_->Send(std::move(early));
  }
  // A snapshot from the leader is installed before the hard state is saved:
  // that hard state's commit index may be the snapshot's index, and a crash
  // between the two writes must not leave a commit index pointing into the
  // old log (whose entries past the old commit may never have been
  // committed: they would be applied on restart). Installed first, a crash
  // leaves the snapshot with the old hard state; the restarted core starts its
  // commit index at the snapshot. Nothing has been sent that depends on
  // either write (a follower's reply waits for both).
  if (rd.snapshot) {
    absl::Status s = storage_->ApplySnapshot(*rd.snapshot);
    if (!s.ok()) {
      log_->critical("installing snapshot failed, stopping: {}", s.ToString());
      return false;
    }
    log_->info("installed snapshot at index {} term {} ({} bytes)", rd.snapshot->metadata().index(),
               rd.snapshot->metadata().term(), rd.snapshot->data().size());
    if (options_.metrics != nullptr) {
      options_.metrics->snapshots_from_leader->Increment();
      options_.metrics->snapshot_bytes->Increment(static_cast<double>(rd.snapshot->data().size()));
    }
  }
  if (rd.hard_state || !rd.entries.empty()) {
    // §5.1 / thesis §3.8: term, vote and entries are durable before any
    // message that reveals them leaves; one fsync covers the whole batch.
    const auto start = std::chrono::steady_clock::now();
    absl::Status s =
        storage_->Save(rd.hard_state ? &*rd.hard_state : nullptr, rd.entries, rd.must_sync);
    if (rd.must_sync && options_.metrics != nullptr) {
      options_.metrics->sync_seconds->Observe(common::SecondsSince(start));
    }
    if (!s.ok()) {
      log_->critical("persisting Raft state failed, stopping: {}", s.ToString());
      return false;
    }
    ++saves_;
    if (rd.must_sync) ++synced_saves_;
  }
  if (rd.soft_state) {
    log_->info("role {} term {} leader {}", RoleName(rd.soft_state->role), core_->term(),
               rd.soft_state->leader);
  }
  if (!rd.messages.empty()) transport_->Send(std::move(rd.messages));
  // Advance before handing the entries over, so they can be moved rather than
  // copied; nothing below reads the core.
  core_->Advance(rd);
  {
    absl::MutexLock lock(&mu_);
    if (rd.snapshot || !rd.committed_entries.empty()) {
      // Published with the hand-over, so that GetStatus never shows an
      // applied index above the commit index (the apply thread may finish
      // the batch before this iteration's PublishStatus).
      status_.commit = core_->commit();
      // Likewise the configuration: whoever waits for a membership change to
      // be applied then sees it.
      status_.conf = published_conf_;
      status_.conf_committed = core_->conf_index() <= core_->commit();
      ApplyBatch batch;
      batch.snapshot = std::move(rd.snapshot);
      batch.entries = std::move(rd.committed_entries);
      apply_queue_.push_back(std::move(batch));
    }
    for (const ReadState& rs : rd.read_states) {
      auto batch = read_batches_.find(rs.context);
      if (batch == read_batches_.end()) continue;
      for (const std::string& ctx : batch->second) {
        auto it = reads_.find(ctx);
        if (it == reads_.end()) continue;
        answers->push_back({std::move(it->second), rs.index});
        reads_.erase(it);
      }
      read_batches_.erase(batch);
    }
    // Losing leadership changes the soft state, so this Ready sees it: a
    // deposed leader's pending reads get no read point here; tell their
    // callers now rather than at their deadline.
    if (core_->role() != Role::kLeader) {
      for (auto& [ctx, members] : read_batches_) FailReadsLocked(members, answers);
      read_batches_.clear();
    }
  }
  return true;
}

void Node::FailReadsLocked(const std::vector<std::string>& contexts, std::vector<ReadAnswer>* out) {
  for (const std::string& ctx : contexts) {
    auto it = reads_.find(ctx);
    if (it == reads_.end()) continue;
    out->push_back({std::move(it->second), NotLeaderError(core_->leader())});
    reads_.erase(it);
  }
}

void Node::DoSnapshot(SnapshotRequest* req) {
  uint64_t applied;
  {
    absl::MutexLock lock(&mu_);
    applied = applied_;
  }
  if (req->index > applied) {
    req->status = absl::FailedPreconditionError(
        absl::StrCat("snapshot index ", req->index, " above applied index ", applied));
    return;
  }
  // The configuration as of `index` (a later change may be in the log).
  const size_t bytes = req->data.size();
  req->status = storage_->CreateSnapshot(req->index, core_->ConfStateAt(req->index),
                                         std::move(req->data), options_.log_retention);
  if (req->status.ok()) {
    if (options_.metrics != nullptr) {
      options_.metrics->snapshots_local->Increment();
      options_.metrics->snapshot_bytes->Increment(static_cast<double>(bytes));
    }
    log_->info("snapshot at index {}; log now starts at {}", req->index, storage_->FirstIndex());
  }
}

void Node::RefreshConf() {
  if (published_conf_version_ == core_->conf_version()) return;
  published_conf_version_ = core_->conf_version();
  auto conf = std::make_shared<const pb::ConfState>(core_->conf_state());
  if (published_conf_ == nullptr ||
      conf->SerializeAsString() != published_conf_->SerializeAsString()) {
    log_->info("configuration: {}", conf->ShortDebugString());
  }
  published_conf_ = std::move(conf);
  // The transport learns the addresses of members added since.
  std::map<uint64_t, std::string> peers;
  for (const auto& [id, address] : published_conf_->addresses()) {
    if (id != options_.id && !address.empty()) peers[id] = address;
  }
  transport_->UpdatePeers(peers);
}

void Node::PublishStatus() {
  NodeStatus s;
  s.id = options_.id;
  s.role = core_->role();
  s.term = core_->term();
  s.leader = core_->leader();
  s.commit = core_->commit();
  s.last_index = core_->last_index();
  s.snapshot_index = storage_->SnapshotIndex();
  s.first_index = storage_->FirstIndex();
  s.log_bytes = storage_->RaftStateBytes();
  s.snapshot_bytes = storage_->SnapshotBytes();
  s.saves = saves_;
  s.synced_saves = synced_saves_;
  s.loops = loops_;
  RefreshConf();
  s.conf = published_conf_;
  s.conf_committed = core_->conf_index() <= core_->commit();
  absl::MutexLock lock(&mu_);
  s.applied = applied_;
  status_ = s;
}

void Node::RunApply() {
  for (;;) {
    ApplyBatch batch;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Node* n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(n->mu_) {
            return n->stop_ || !n->apply_queue_.empty();
          },
          this));
      if (stop_) return;
      batch = std::move(apply_queue_.front());
      apply_queue_.pop_front();
    }
    uint64_t last = 0;
    if (batch.snapshot) last = batch.snapshot->metadata().index();
    if (!batch.entries.empty()) last = batch.entries.back().index();
    const size_t entries = batch.entries.size();
    const auto start = std::chrono::steady_clock::now();
    apply_(std::move(batch));
    if (options_.metrics != nullptr) {
      options_.metrics->apply_seconds->Observe(common::SecondsSince(start));
      options_.metrics->applied_entries->Increment(static_cast<double>(entries));
    }
    absl::MutexLock lock(&mu_);
    if (last > applied_) applied_ = last;
    status_.applied = applied_;
  }
}

absl::StatusOr<Proposal> Node::Propose(std::string data) {
  absl::StatusOr<Proposal> result;
  absl::Notification done;
  ProposeAsync(std::move(data), [&](absl::StatusOr<Proposal> r) {
    result = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

void Node::ProposeAsync(std::string data, ProposeCallback done) {
  {
    absl::MutexLock lock(&mu_);
    if (!stop_) {
      proposals_.push_back({std::move(data), std::nullopt, absl::OkStatus(), {}, std::move(done)});
      return;
    }
  }
  done(absl::UnavailableError("raft node stopped"));
}

void Node::ProposeConfChangeAsync(pb::ConfChange change, ProposeCallback done) {
  {
    absl::MutexLock lock(&mu_);
    if (!stop_) {
      proposals_.push_back({"", std::move(change), absl::OkStatus(), {}, std::move(done)});
      return;
    }
  }
  done(absl::UnavailableError("raft node stopped"));
}

absl::StatusOr<uint64_t> Node::ReadIndex(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  struct Answer {
    absl::StatusOr<uint64_t> index;
    absl::Notification done;
  };
  auto answer = std::make_shared<Answer>();
  ReadIndexAsync([answer](absl::StatusOr<uint64_t> index) {
    answer->index = std::move(index);
    answer->done.Notify();
  });
  // On timeout the request stays queued until leadership changes or the Node
  // stops; its answer then goes to `answer`, which the callback keeps alive.
  if (!answer->done.WaitForNotificationWithDeadline(deadline)) {
    return absl::DeadlineExceededError("ReadIndex: no read point (leadership lost?)");
  }
  if (!answer->index.ok()) return answer->index.status();
  if (!WaitForApplied(*answer->index, deadline - absl::Now())) {
    return absl::DeadlineExceededError("ReadIndex: read point not applied in time");
  }
  return *answer->index;
}

void Node::ReadIndexAsync(ReadIndexCallback done) {
  {
    absl::MutexLock lock(&mu_);
    if (!stop_) {
      std::string ctx = absl::StrCat(options_.id, "/", ++next_read_id_);
      read_requests_.push_back(ctx);
      reads_.emplace(std::move(ctx), std::move(done));
      return;
    }
  }
  done(absl::UnavailableError("raft node stopped"));
}

void Node::TransferLeadership(uint64_t to) {
  absl::MutexLock lock(&mu_);
  transfers_.push_back(to);
}

absl::Status Node::Snapshot(uint64_t index, std::string data) {
  auto req = std::make_shared<SnapshotRequest>();
  req->index = index;
  req->data = std::move(data);
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return absl::UnavailableError("raft node stopped");
    snapshot_requests_.push_back(req);
  }
  req->done.WaitForNotification();
  return req->status;
}

bool Node::WaitForApplied(uint64_t index, absl::Duration timeout) {
  struct Arg {
    Node* node;
    uint64_t index;
  } arg{this, index};
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(
                                  +[](Arg* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                    return a->node->stop_ || a->node->applied_ >= a->index;
                                  },
                                  &arg),
                              timeout) &&
         applied_ >= index;
}

NodeStatus Node::GetStatus() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

}  // namespace ds::raft
