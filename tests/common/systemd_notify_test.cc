// SystemdNotifier against a notify socket of the test's own, as systemd
// provides one to a Type=notify unit: READY/STOPPING/STATUS messages, and
// watchdog pings only while the liveness check passes.
#include "common/systemd_notify.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/init.h"
#include "gtest/gtest.h"

namespace ds::common {
namespace {

// A datagram socket bound at a temporary path, set as NOTIFY_SOCKET.
class NotifySocket {
 public:
  NotifySocket() {
    std::string tmpl = ::testing::TempDir() + "/notify.XXXXXX";
    EXPECT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/notify";
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    timeval tv{.tv_sec = 0, .tv_usec = 100000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  ~NotifySocket() {
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    close(fd_);
    std::filesystem::remove_all(dir_);
  }
  // The next message, or "" if none arrives within `timeout`.
  std::string Receive(absl::Duration timeout = absl::Seconds(2)) {
    const absl::Time deadline = absl::Now() + timeout;
    char buf[4096];
    while (absl::Now() < deadline) {
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n >= 0) return std::string(buf, n);
    }
    return "";
  }

 private:
  std::string dir_;
  std::string path_;
  int fd_ = -1;
};

TEST(SystemdNotifier, DoesNothingOutsideSystemd) {
  unsetenv("NOTIFY_SOCKET");
  SystemdNotifier n(MakeLogger("test"));
  EXPECT_FALSE(n.enabled());
  EXPECT_EQ(n.watchdog_period(), absl::ZeroDuration());
  n.Ready("up");
  n.StartWatchdog([] { return true; });
  n.Stopping("down");
}

TEST(SystemdNotifier, ReadyStatusStopping) {
  NotifySocket socket;
  SystemdNotifier n(MakeLogger("test"));
  ASSERT_TRUE(n.enabled());
  n.Ready("replica 1 serving");
  EXPECT_EQ(socket.Receive(), "READY=1\nSTATUS=replica 1 serving");
  n.Status("busy");
  EXPECT_EQ(socket.Receive(), "STATUS=busy");
  n.Stopping("shutting down");
  EXPECT_EQ(socket.Receive(), "STOPPING=1\nSTATUS=shutting down");
}

TEST(SystemdNotifier, WatchdogPingsOnlyWhileAlive) {
  NotifySocket socket;
  setenv("WATCHDOG_USEC", "200000", 1);  // 200 ms: pings every 50 ms
  setenv("WATCHDOG_PID", absl::StrCat(getpid()).c_str(), 1);
  std::atomic<bool> alive = true;
  SystemdNotifier n(MakeLogger("test"));
  EXPECT_EQ(n.watchdog_period(), absl::Milliseconds(200));
  n.StartWatchdog([&alive] { return alive.load(); });
  EXPECT_EQ(socket.Receive(), "WATCHDOG=1");
  EXPECT_EQ(socket.Receive(), "WATCHDOG=1");
  alive = false;
  // At most one ping already decided before the flip; then none.
  socket.Receive(absl::Milliseconds(120));
  EXPECT_EQ(socket.Receive(absl::Milliseconds(400)), "") << "pinged while not alive";
  alive = true;
  EXPECT_EQ(socket.Receive(), "WATCHDOG=1");
}

TEST(SystemdNotifier, WatchdogForAnotherPidIsIgnored) {
  NotifySocket socket;
  setenv("WATCHDOG_USEC", "200000", 1);
  setenv("WATCHDOG_PID", absl::StrCat(getpid() + 1).c_str(), 1);
  SystemdNotifier n(MakeLogger("test"));
  EXPECT_EQ(n.watchdog_period(), absl::ZeroDuration());
}

}  // namespace
}  // namespace ds::common
