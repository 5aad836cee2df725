// Progress: the leader's view of one follower's log (etcd's tracker.Progress).
//
//   kProbe:     the follower's log position is unknown; one MsgApp at a time
//               (paused until it is answered or a heartbeat response arrives).
//   kReplicate: the follower is caught up to `match`; MsgApps are pipelined
//               optimistically (next advances on send) within the Inflights
//               window (count and bytes).
//   kSnapshot:  the follower needs entries we compacted; we sent a snapshot
//               at pending_snapshot and wait for its acknowledgement.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>

namespace ds::raft {

// Sliding window of unacknowledged MsgApps, by count and by payload bytes.
class Inflights {
 public:
  Inflights(int max_count, uint64_t max_bytes) : max_count_(max_count), max_bytes_(max_bytes) {}

  // Records a MsgApp whose last entry is `index` carrying `bytes` of payload.
  void Add(uint64_t index, uint64_t bytes);
  // Acknowledges every MsgApp whose last entry is <= index.
  void FreeLE(uint64_t index);
  void Reset();
  // Frees the oldest slot: a heartbeat response proves the follower is alive,
  // so a lost MsgApp must not stall a full window forever.
  void FreeFirstOne();
  bool Full() const;
  int count() const { return static_cast<int>(window_.size()); }
  uint64_t bytes() const { return bytes_; }

 private:
  struct Inflight {
    uint64_t index;
    uint64_t bytes;
  };
  int max_count_;
  uint64_t max_bytes_;
  std::deque<Inflight> window_;
  uint64_t bytes_ = 0;
};

class Progress {
 public:
  enum class State { kProbe, kReplicate, kSnapshot };

  Progress(uint64_t next, int max_inflight_msgs, uint64_t max_inflight_bytes)
      : next(next), inflights(max_inflight_msgs, max_inflight_bytes) {}

  void BecomeProbe();
  void BecomeReplicate();
  void BecomeSnapshot(uint64_t snapshot_index);

  // An acknowledgement up to n: returns whether match advanced (or next moved).
  bool MaybeUpdate(uint64_t n);
  // We sent entries up to `last` (bytes of payload): in kReplicate, next
  // advances optimistically and the window fills; in kProbe, pause.
  void SentEntries(uint64_t last, uint64_t bytes, bool had_entries);
  // The follower rejected MsgApp at `rejected`; `hint` is its suggested next
  // probe index (the fast-backtracking result). Returns false if the rejection
  // is stale (out of order) and must be ignored.
  bool MaybeDecrTo(uint64_t rejected, uint64_t hint);
  // Whether sending more MsgApps must wait.
  bool IsPaused() const;

  uint64_t match = 0;
  uint64_t next = 1;
  State state = State::kProbe;
  // kProbe: a MsgApp is outstanding; cleared on heartbeat response.
  bool msg_app_probe_sent = false;
  // kSnapshot: index of the snapshot being sent.
  uint64_t pending_snapshot = 0;
  // Heard from the follower since the last CheckQuorum round.
  bool recent_active = false;
  Inflights inflights;
};

const char* ProgressStateName(Progress::State state);

using ProgressMap = std::map<uint64_t, Progress>;

}  // namespace ds::raft
