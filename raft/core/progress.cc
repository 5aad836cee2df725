#include "raft/core/progress.h"

#include <algorithm>

namespace ds::raft {

void Inflights::Add(uint64_t index, uint64_t bytes) {
  window_.push_back({index, bytes});
  bytes_ += bytes;
}

void Inflights::FreeLE(uint64_t index) {
  while (!window_.empty() && window_.front().index <= index) {
    bytes_ -= window_.front().bytes;
    window_.pop_front();
  }
}

void Inflights::FreeFirstOne() {
  if (window_.empty()) return;
  bytes_ -= window_.front().bytes;
  window_.pop_front();
}

void Inflights::Reset() {
  window_.clear();
  bytes_ = 0;
}

bool Inflights::Full() const {
  return static_cast<int>(window_.size()) >= max_count_ ||
         (max_bytes_ != 0 && bytes_ >= max_bytes_);
}

void Progress::BecomeProbe() {
  // Leaving kSnapshot: the follower has at least the snapshot, so probe from
  // just after it rather than from match.
  if (state == State::kSnapshot) {
    const uint64_t snap = pending_snapshot;
    state = State::kProbe;
    next = std::max(match + 1, snap + 1);
  } else {
    state = State::kProbe;
    next = match + 1;
  }
  msg_app_probe_sent = false;
  pending_snapshot = 0;
  inflights.Reset();
}

void Progress::BecomeReplicate() {
  state = State::kReplicate;
  next = match + 1;
  msg_app_probe_sent = false;
  pending_snapshot = 0;
  inflights.Reset();
}

void Progress::BecomeSnapshot(uint64_t snapshot_index) {
  state = State::kSnapshot;
  msg_app_probe_sent = false;
  pending_snapshot = snapshot_index;
  inflights.Reset();
}

bool Progress::MaybeUpdate(uint64_t n) {
  bool updated = false;
  if (match < n) {
    match = n;
    updated = true;
    msg_app_probe_sent = false;
  }
  next = std::max(next, n + 1);
  return updated;
}

void Progress::SentEntries(uint64_t last, uint64_t bytes, bool had_entries) {
  switch (state) {
    case State::kReplicate:
      if (had_entries) {
        next = last + 1;
        inflights.Add(last, bytes);
      }
      break;
    case State::kProbe:
      msg_app_probe_sent = true;
      break;
    case State::kSnapshot:
      break;
  }
}

bool Progress::MaybeDecrTo(uint64_t rejected, uint64_t hint) {
  if (state == State::kReplicate) {
    // Rejections of indexes at or below match are stale: the follower has
    // already acknowledged more.
    if (rejected <= match) return false;
    next = match + 1;
    return true;
  }
  // kProbe/kSnapshot: only the rejection of the probe we sent (at next - 1)
  // is meaningful.
  if (next == 0 || next - 1 != rejected) return false;
  next = std::max(std::min(rejected, hint + 1), match + 1);
  msg_app_probe_sent = false;
  return true;
}

bool Progress::IsPaused() const {
  switch (state) {
    case State::kProbe:
      return msg_app_probe_sent;
    case State::kReplicate:
      return inflights.Full();
    case State::kSnapshot:
      return true;
  }
  return false;
}

const char* ProgressStateName(Progress::State state) {
  switch (state) {
    case Progress::State::kProbe:
      return "probe";
    case Progress::State::kReplicate:
      return "replicate";
    case Progress::State::kSnapshot:
      return "snapshot";
  }
  return "?";
}

}  // namespace ds::raft
