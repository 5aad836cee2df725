// What a daemon tells systemd when a unit with Type=notify started it
// (NOTIFY_SOCKET set): READY=1 once it serves, STOPPING=1 when it shuts down,
// STATUS= lines for `systemctl status`, and watchdog pings (WatchdogSec=) sent
// only while the daemon's own liveness check passes, so that a hung replica is
// restarted rather than kept alive by a healthy side thread. Outside systemd
// (no NOTIFY_SOCKET) every call does nothing.
#pragma once

#include <functional>
#include <memory>
#include <string_view>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "spdlog/logger.h"

namespace ds::common {

class SystemdNotifier {
 public:
  explicit SystemdNotifier(std::shared_ptr<spdlog::logger> log);
  ~SystemdNotifier();  // stops the watchdog thread
  SystemdNotifier(const SystemdNotifier&) = delete;
  SystemdNotifier& operator=(const SystemdNotifier&) = delete;

  // Whether systemd listens (NOTIFY_SOCKET is set).
  bool enabled() const { return enabled_; }
  // The watchdog period systemd asked for (WatchdogSec=; WATCHDOG_USEC for
  // this pid), or zero when there is none.
  absl::Duration watchdog_period() const { return watchdog_; }

  // READY=1 with a STATUS line.
  void Ready(std::string_view status);
  // STOPPING=1 with a STATUS line.
  void Stopping(std::string_view status);
  void Status(std::string_view status);

  // With a watchdog period P, pings every P/4 while `alive()` returns true; a
  // false answer skips the ping (logged), so systemd kills and restarts the
  // unit after P without one. `alive` runs on the notifier's own thread and
  // must be quick. Without a watchdog it does nothing. Call once.
  void StartWatchdog(std::function<bool()> alive);

 private:
  void Notify(const std::string& message);

  const std::shared_ptr<spdlog::logger> log_;
  const bool enabled_;
  absl::Duration watchdog_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace ds::common
