#include "raft/rsm.h"

#include <cstdio>
#include <cstdlib>

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
  return rsm;
}

Rsm::~Rsm() { Stop(); }

void Rsm::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  if (started_.load(std::memory_order_acquire)) node_->Stop();
  absl::MutexLock lock(&mu_);
  for (auto& [index, w] : waiters_) {
    w->result = absl::UnavailableError("replica stopping");
    w->done.Notify();
  }
  waiters_.clear();
}

uint64_t Rsm::snapshots_taken() const {
  absl::MutexLock lock(&mu_);
  return snapshots_taken_;
}

absl::StatusOr<std::string> Rsm::Submit(std::string command, absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return absl::UnavailableError("replica stopping");
    ++proposing_;
  }
  // The waiter is registered by the Propose callback on the Raft thread, so
  // this thread sleeps once (until applied) instead of also waiting for the
  // Raft loop iteration that appends the entry.
  auto w = std::make_shared<Waiter>();
  node_->ProposeAsync(std::move(command), [this, w](absl::StatusOr<Proposal> p) {
    absl::MutexLock lock(&mu_);
    if (--proposing_ == 0 && !p.ok()) unclaimed_.clear();
    if (!p.ok()) {
      w->result = p.status();
      w->done.Notify();
      return;
    }
    w->term = p->term;
    w->index = p->index;
    auto it = unclaimed_.find(p->index);
    if (it != unclaimed_.end()) {
      // Applied before we got here.
      w->result = it->second.first == p->term
                      ? std::move(it->second.second)
                      : absl::UnavailableError("entry replaced by a new leader; retry");
      w->done.Notify();
    } else if (stopped_) {
      w->result = absl::UnavailableError("replica stopping");
      w->done.Notify();
    } else {
      waiters_.emplace(p->index, w);
    }
    if (proposing_ == 0) unclaimed_.clear();
  });
  if (!w->done.WaitForNotificationWithTimeout(timeout)) {
    absl::MutexLock lock(&mu_);
    auto [lo, hi] = waiters_.equal_range(w->index);
    for (auto it = lo; it != hi; ++it) {
      if (it->second == w) {
        waiters_.erase(it);
        break;
      }
    }
    if (!w->done.HasBeenNotified()) {
      // If the callback has not run yet it will still register `w`; Finish
      // or Stop drops it later.
      return absl::DeadlineExceededError(
          absl::StrCat("not applied within ", absl::FormatDuration(timeout), " (index ", w->index,
                       ", term ", w->term, "); outcome unknown"));
    }
  }
  return std::move(w->result);
}

absl::Status Rsm::Read(absl::Duration timeout, absl::FunctionRef<void(const StateMachine&)> fn) {
  // Node::ReadIndex confirms leadership with a heartbeat round and waits until
  // this replica has applied the read index (§6.4).
  absl::StatusOr<uint64_t> index = node_->ReadIndex(timeout);
  if (!index.ok()) return index.status();
  absl::MutexLock lock(&sm_mu_);
  fn(*sm_);
  return absl::OkStatus();
}

void Rsm::Finish(uint64_t index, absl::StatusOr<std::string> result, uint64_t term) {
  absl::MutexLock lock(&mu_);
  auto [lo, hi] = waiters_.equal_range(index);
  if (lo == hi) {
    if (proposing_ > 0) unclaimed_[index] = {term, std::move(result)};
    return;
  }
  for (auto it = lo; it != hi; ++it) {
    Waiter& w = *it->second;
    // A different term at our index: a new leader overwrote our entry, which
    // therefore was never committed (Raft §5.3): safe to retry.
    w.result = w.term == term ? result
                              : absl::StatusOr<std::string>(absl::UnavailableError(
                                    "entry replaced by a new leader; retry"));
    w.done.Notify();
  }
  waiters_.erase(lo, hi);
}

void Rsm::OnApply(ApplyBatch batch) {
  // Snapshot before this batch, while the state machine is exactly at the
  // Node's applied index (the Node counts a batch applied when we return).
  MaybeSnapshot();
  if (batch.snapshot) {
    const uint64_t snap_index = batch.snapshot->metadata().index();
    {
      absl::MutexLock lock(&sm_mu_);
      if (snap_index > sm_->applied_index()) {
        absl::Status st = sm_->Restore(batch.snapshot->data());
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
      it->second->result =
          absl::UnavailableError("outcome unknown (state replaced by a snapshot); retry");
      it->second->done.Notify();
      it = waiters_.erase(it);
    }
  }
  for (pb::Entry& e : batch.entries) {
    absl::StatusOr<std::string> result;
    {
      absl::MutexLock lock(&sm_mu_);
      if (e.index() <= sm_->applied_index()) continue;  // replayed below the snapshot
      static const std::string kEmpty;
      result = sm_->Apply(e.type() == pb::ENTRY_NORMAL ? e.data() : kEmpty, e.index());
    }
    Finish(e.index(), std::move(result), e.term());
  }
}

void Rsm::MaybeSnapshot() {
  // The first batches may arrive before Start() has stored node_.
  if (options_.snapshot_threshold_bytes == 0 || !started_.load(std::memory_order_acquire)) return;
  NodeStatus st = node_->GetStatus();
  if (st.log_bytes <= options_.snapshot_threshold_bytes) return;
  uint64_t index;
  std::string data;
  {
    absl::MutexLock lock(&sm_mu_);
    index = sm_->applied_index();
    if (index <= st.snapshot_index) return;
    data = sm_->Snapshot();
  }
  // Not under sm_mu_: this waits for the Raft thread's fsync.
  absl::Status s = node_->Snapshot(index, std::move(data));
  if (s.ok()) {
    absl::MutexLock lock(&mu_);
    ++snapshots_taken_;
  }
}

}  // namespace ds::raft
