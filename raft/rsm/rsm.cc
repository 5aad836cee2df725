#include "raft/rsm/rsm.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"

namespace ds::raft {

absl::StatusOr<std::unique_ptr<Rsm>> Rsm::Start(RsmOptions options, NodeOptions node_options,
                                                std::unique_ptr<Storage> storage,
                                                std::unique_ptr<Transport> transport,
                                                StateMachine* sm) {
  std::unique_ptr<Rsm> rsm(new Rsm(options, sm));
  Rsm* self = rsm.get();
  // The Node's first ApplyBatch carries the stored snapshot, if any; the log
  // after it follows.
  auto node = Node::Start(std::move(node_options), std::move(storage), std::move(transport),
                          [self](ApplyBatch batch) { self->OnApply(std::move(batch)); });
  if (!node.ok()) return node.status();
  rsm->node_ = std::move(*node);
  rsm->started_.store(true, std::memory_order_release);
  rsm->deadline_thread_ = std::thread([self] { self->RunDeadlines(); });
  return rsm;
}

Rsm::~Rsm() { Stop(); }

void Rsm::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  // The Node fails what it still holds (proposals, reads) through their
  // callbacks; everything else pending is failed here.
  if (started_.load(std::memory_order_acquire)) node_->Stop();
  stop_deadlines_.Notify();
  if (deadline_thread_.joinable()) deadline_thread_.join();
  std::vector<Outcome> out;
  {
    absl::MutexLock lock(&mu_);
    while (!by_deadline_.empty()) {
      OpPtr op = by_deadline_.begin()->second;
      ClaimLocked(op);
      out.push_back({std::move(op), absl::UnavailableError("replica stopping")});
    }
    waiters_.clear();
    reads_waiting_.clear();
    unclaimed_.clear();
  }
  Deliver(&out);
}

uint64_t Rsm::snapshots_taken() const {
  absl::MutexLock lock(&mu_);
  return snapshots_taken_;
}

Rsm::OpPtr Rsm::NewOpLocked(absl::Time deadline) {
  auto op = std::make_shared<Op>();
  op->deadline = deadline;
  op->by_deadline = by_deadline_.emplace(deadline, op);
  return op;
}

bool Rsm::ClaimLocked(const OpPtr& op) {
  if (op->finished) return false;
  op->finished = true;
  by_deadline_.erase(op->by_deadline);
  return true;
}

void Rsm::Deliver(std::vector<Outcome>* outcomes) {
  if (outcomes->empty()) return;
  // Queries of successful reads first, under one sm_mu_ acquisition.
  bool any_query = false;
  for (const Outcome& o : *outcomes) any_query |= o.op->query && o.result.ok();
  if (any_query) {
    absl::MutexLock lock(&sm_mu_);
    for (const Outcome& o : *outcomes) {
      if (o.op->query && o.result.ok()) o.op->query(*sm_);
    }
  }
  for (Outcome& o : *outcomes) {
    if (o.op->read_done) {
      o.op->read_done(o.result.status());
    } else {
      o.op->done(std::move(o.result));
    }
  }
  outcomes->clear();
}

void Rsm::SubmitAsync(std::string command, absl::Time deadline, ResultCallback done) {
  ProposeAndWait(
      [this, &command](Node::ProposeCallback cb) {
        node_->ProposeAsync(std::move(command), std::move(cb));
      },
      deadline, std::move(done));
}

void Rsm::ChangeMembershipAsync(pb::ConfChange change, absl::Time deadline, ResultCallback done) {
  ProposeAndWait(
      [this, &change](Node::ProposeCallback cb) {
        node_->ProposeConfChangeAsync(std::move(change), std::move(cb));
      },
      deadline, std::move(done));
}

void Rsm::ProposeAndWait(absl::FunctionRef<void(Node::ProposeCallback)> propose,
                         absl::Time deadline, ResultCallback done) {
  OpPtr op;
  {
    absl::MutexLock lock(&mu_);
    if (!stopped_) {
      op = NewOpLocked(deadline);
      op->done = std::move(done);
      ++proposing_;
    }
  }
  if (op == nullptr) {
    done(absl::UnavailableError("replica stopping"));
    return;
  }
  // The waiter is registered by the Propose callback on the Raft thread, so
  // nothing waits for the Raft loop iteration that appends the entry.
  propose([this, op](absl::StatusOr<Proposal> p) {
    std::vector<Outcome> out;
    {
      absl::MutexLock lock(&mu_);
      --proposing_;
      if (!p.ok()) {
        if (ClaimLocked(op)) out.push_back({op, p.status()});
      } else {
        op->term = p->term;
        op->index = p->index;
        auto it = unclaimed_.find(p->index);
        if (it != unclaimed_.end()) {
          // Applied before we got here.
          if (ClaimLocked(op)) {
            out.push_back(
                {op, it->second.first == p->term
                         ? it->second.second
                         : absl::UnavailableError("entry replaced by a new leader; retry")});
          }
        } else if (stopped_) {
          if (ClaimLocked(op)) out.push_back({op, absl::UnavailableError("replica stopping")});
        } else if (!op->finished) {
          waiters_.emplace(p->index, op);
        }
      }
      if (proposing_ == 0) unclaimed_.clear();
    }
    Deliver(&out);
  });
}

void Rsm::ReadAsync(absl::Time deadline, QueryFn query, StatusCallback done) {
  OpPtr op;
  {
    absl::MutexLock lock(&mu_);
    if (!stopped_) {
      op = NewOpLocked(deadline);
      op->query = std::move(query);
      op->read_done = std::move(done);
    }
  }
  if (op == nullptr) {
    done(absl::UnavailableError("replica stopping"));
    return;
  }
  // The Node confirms leadership with a heartbeat round (shared by every read
  // of one Raft loop iteration) and gives the commit index at the start of it
  // (§6.4); the read is served once this replica has applied that index.
  node_->ReadIndexAsync([this, op](absl::StatusOr<uint64_t> index) {
    std::vector<Outcome> out;
    {
      absl::MutexLock lock(&mu_);
      if (!index.ok()) {
        if (ClaimLocked(op)) out.push_back({op, index.status()});
      } else if (op->finished) {
        // Past its deadline already.
      } else if (applied_ >= *index) {
        ClaimLocked(op);
        out.push_back({op, std::string()});
      } else {
        op->index = *index;
        reads_waiting_.emplace(*index, op);
      }
    }
    Deliver(&out);
  });
}

absl::StatusOr<std::string> Rsm::Submit(std::string command, absl::Duration timeout) {
  struct Sync {
    absl::StatusOr<std::string> result;
    absl::Notification done;
  };
  auto sync = std::make_shared<Sync>();
  SubmitAsync(std::move(command), absl::Now() + timeout, [sync](absl::StatusOr<std::string> r) {
    sync->result = std::move(r);
    sync->done.Notify();
  });
  // The deadline thread answers at most deadline_check_interval late.
  sync->done.WaitForNotification();
  return std::move(sync->result);
}

absl::Status Rsm::Read(absl::Duration timeout, absl::FunctionRef<void(const StateMachine&)> fn) {
  struct Sync {
    absl::Status status;
    absl::Notification done;
  };
  auto sync = std::make_shared<Sync>();
  // `fn` is only called before `done`, which this thread waits for.
  ReadAsync(
      absl::Now() + timeout, [&fn](const StateMachine& sm) { fn(sm); },
      [sync](absl::Status s) {
        sync->status = std::move(s);
        sync->done.Notify();
      });
  sync->done.WaitForNotification();
  return sync->status;
}

void Rsm::RunDeadlines() {
  while (!stop_deadlines_.WaitForNotificationWithTimeout(options_.deadline_check_interval)) {
    std::vector<Outcome> out;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time now = absl::Now();
      while (!by_deadline_.empty() && by_deadline_.begin()->first <= now) {
        OpPtr op = by_deadline_.begin()->second;
        ClaimLocked(op);
        absl::Status st = op->query
                              ? absl::DeadlineExceededError(absl::StrCat(
                                    "no read point applied in time (leadership lost?)",
                                    op->index > 0 ? absl::StrCat("; read index ", op->index) : ""))
                              : absl::DeadlineExceededError(
                                    absl::StrCat("not applied in time (index ", op->index,
                                                 ", term ", op->term, "); outcome unknown"));
        out.push_back({std::move(op), std::move(st)});
      }
    }
    Deliver(&out);
  }
}

void Rsm::OnApply(ApplyBatch batch) {
  // Snapshot before this batch, while the state machine is exactly at the
  // Node's applied index (the Node counts a batch applied when we return).
  MaybeSnapshot();
  std::vector<Outcome> out;
  if (batch.snapshot) {
    const uint64_t snap_index = batch.snapshot->metadata().index();
    {
      absl::MutexLock lock(&sm_mu_);
      if (snap_index > sm_->applied_index()) {
        absl::Status st = sm_->Restore(batch.snapshot->data());
        if (st.ok()) sm_->ReleaseSnapshotsBefore(snap_index);
        if (!st.ok()) {
          // A snapshot that a state machine produced and we cannot read means a
          // bug or corruption; serving from the old state would be wrong, and
          // skipping ahead would lose writes: fail-stop (etcd panics here too).
          std::fprintf(stderr, "rsm: cannot restore snapshot at index %llu: %s\n",
                       static_cast<unsigned long long>(snap_index), st.ToString().c_str());
          std::abort();
        }
      }
    }
    // Proposals at or below the snapshot were applied (or not) without us
    // seeing their results.
    absl::MutexLock lock(&mu_);
    for (auto it = waiters_.begin(); it != waiters_.end() && it->first <= snap_index;) {
      if (ClaimLocked(it->second)) {
        out.push_back(
            {it->second, absl::UnavailableError("outcome unknown (state replaced by a snapshot); "
                                                "retry")});
      }
      it = waiters_.erase(it);
    }
  }
  struct Applied {
    uint64_t index;
    uint64_t term;
    absl::StatusOr<std::string> result;
  };
  std::vector<Applied> applied;
  applied.reserve(batch.entries.size());
  uint64_t applied_index;
  {
    static const std::string kEmpty;
    absl::MutexLock lock(&sm_mu_);
    for (pb::Entry& e : batch.entries) {
      if (e.index() <= sm_->applied_index()) continue;  // replayed below the snapshot
      applied.push_back({e.index(), e.term(),
                         sm_->Apply(e.type() == pb::ENTRY_NORMAL ? e.data() : kEmpty, e.index())});
    }
    if (!applied.empty()) sm_->FinishBatch();
    applied_index = sm_->applied_index();
  }
  {
    absl::MutexLock lock(&mu_);
    applied_ = std::max(applied_, applied_index);
    for (Applied& a : applied) {
      auto [lo, hi] = waiters_.equal_range(a.index);
      if (lo == hi) {
        if (proposing_ > 0) unclaimed_[a.index] = {a.term, std::move(a.result)};
        continue;
      }
      for (auto it = lo; it != hi; ++it) {
        const OpPtr& op = it->second;
        if (!ClaimLocked(op)) continue;
        // A different term at our index: a new leader overwrote our entry,
        // which therefore was never committed (Raft §5.3): safe to retry.
        out.push_back({op, op->term == a.term ? a.result
                                              : absl::StatusOr<std::string>(absl::UnavailableError(
                                                    "entry replaced by a new leader; retry"))});
      }
      waiters_.erase(lo, hi);
    }
    while (!reads_waiting_.empty() && reads_waiting_.begin()->first <= applied_) {
      OpPtr op = std::move(reads_waiting_.begin()->second);
      reads_waiting_.erase(reads_waiting_.begin());
      if (ClaimLocked(op)) out.push_back({std::move(op), std::string()});
    }
  }
  Deliver(&out);
}

void Rsm::MaybeSnapshot() {
  // The first batches may arrive before Start() has stored node_.
  if (options_.snapshot_threshold_bytes == 0 || !started_.load(std::memory_order_acquire)) return;
  NodeStatus st = node_->GetStatus();
  if (st.log_bytes <= options_.snapshot_threshold_bytes) return;
  // On the apply thread, the only one that changes the state machine, and
  // after the last batch was finished: TakeSnapshot only reads it, so reads
  // go on meanwhile (sm_mu_ is not held across a checkpoint's fsyncs).
  const uint64_t index = sm_->applied_index();
  if (index <= st.snapshot_index) return;
  absl::StatusOr<std::string> data = sm_->TakeSnapshot();
  if (!data.ok()) {
    // The log keeps growing until a later attempt succeeds; nothing is lost.
    std::fprintf(stderr, "rsm: snapshot at index %llu failed: %s\n",
                 static_cast<unsigned long long>(index), data.status().ToString().c_str());
    return;
  }
  // Not under sm_mu_: this waits for the Raft thread's fsync.
  absl::Status s = node_->Snapshot(index, *std::move(data));
  if (s.ok()) {
    // The previous snapshot stays until the next one: a peer may be fetching
    // it.
    {
      absl::MutexLock lock(&sm_mu_);
      sm_->ReleaseSnapshotsBefore(st.snapshot_index);
    }
    absl::MutexLock lock(&mu_);
    ++snapshots_taken_;
  }
}

}  // namespace ds::raft
