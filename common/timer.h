// Timer: runs functions at given times on one thread of its own, started at
// the first RunAt (a client that never waits costs no thread). Per instance:
// no global state.
#pragma once

#include <functional>
#include <map>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace ds::common {

class Timer {
 public:
  Timer() = default;
  // Drops what has not run yet, after the function running now (if any) returns.
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Runs `fn` at `when` (at once if it has passed), on the timer's thread.
  // `fn` must not block for long: later functions wait for it.
  void RunAt(absl::Time when, std::function<void()> fn) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Loop();

  absl::Mutex mu_;
  std::multimap<absl::Time, std::function<void()>> due_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace ds::common
