#include "common/timer.h"

#include <utility>
#include <vector>

#include "absl/time/clock.h"

namespace ds::common {

Timer::~Timer() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void Timer::RunAt(absl::Time when, std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  if (stop_) return;
  due_.emplace(when, std::move(fn));
  if (!started_) {
    started_ = true;
    thread_ = std::thread([this] { Loop(); });
  }
}

void Timer::Loop() {
  for (;;) {
    std::vector<std::function<void()>> run;
    {
      absl::MutexLock lock(&mu_);
      // Wake at the earliest due time, or when something earlier is added.
      const absl::Time wake = due_.empty() ? absl::InfiniteFuture() : due_.begin()->first;
      auto ready = [this, wake]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || (!due_.empty() && due_.begin()->first < wake) ||
               (!due_.empty() && due_.begin()->first <= absl::Now());
      };
      mu_.AwaitWithDeadline(absl::Condition(&ready), wake);
      if (stop_) return;
      const absl::Time now = absl::Now();
      while (!due_.empty() && due_.begin()->first <= now) {
        run.push_back(std::move(due_.begin()->second));
        due_.erase(due_.begin());
      }
    }
    for (auto& fn : run) fn();
  }
}

}  // namespace ds::common
