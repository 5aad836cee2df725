#include "common/systemd_notify.h"

#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace ds::common {

SystemdNotifier::SystemdNotifier(std::shared_ptr<spdlog::logger> log)
    : log_(std::move(log)), enabled_(std::getenv("NOTIFY_SOCKET") != nullptr) {
  uint64_t usec = 0;
  // > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID (if set) is ours.
  if (enabled_ && sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    watchdog_ = absl::Microseconds(static_cast<int64_t>(usec));
  }
}

SystemdNotifier::~SystemdNotifier() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void SystemdNotifier::Notify(const std::string& message) {
  if (!enabled_) return;
  const int r = sd_notify(0, message.c_str());
  if (r < 0) log_->warn("sd_notify failed: {}", std::strerror(-r));
}

void SystemdNotifier::Ready(std::string_view status) {
  Notify("READY=1\nSTATUS=" + std::string(status));
  if (enabled_) log_->info("told systemd READY ({})", status);
}

void SystemdNotifier::Stopping(std::string_view status) {
  Notify("STOPPING=1\nSTATUS=" + std::string(status));
}

void SystemdNotifier::Status(std::string_view status) { Notify("STATUS=" + std::string(status)); }

void SystemdNotifier::StartWatchdog(std::function<bool()> alive) {
  if (watchdog_ <= absl::ZeroDuration() || thread_.joinable()) return;
  log_->info("systemd watchdog every {}", absl::FormatDuration(watchdog_));
  thread_ = std::thread([this, alive = std::move(alive)] {
    bool was_alive = true;
    while (!stop_.WaitForNotificationWithTimeout(watchdog_ / 4)) {
      const bool ok = alive();
      if (ok) {
        Notify("WATCHDOG=1");
      } else if (was_alive) {
        log_->error("liveness check failed: not feeding the systemd watchdog");
      }
      was_alive = ok;
    }
  });
}

}  // namespace ds::common
