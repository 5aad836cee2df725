#include "tests/client/unreachable_endpoint.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace ds::client::testing {
namespace {

sockaddr_in Loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

// Starts a non-blocking connect; the socket, or -1.
int StartConnect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr = Loopback(port);
  // EINPROGRESS, or an error at once (refused): AwaitConnect reads SO_ERROR.
  (void)connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  return fd;
}

// Waits up to `limit` for `fd`'s connect to finish; its error (0: connected),
// or nullopt if it is still in progress.
std::optional<int> AwaitConnect(int fd, absl::Duration limit) {
  pollfd p{.fd = fd, .events = POLLOUT, .revents = 0};
  const absl::Time deadline = absl::Now() + limit;
  for (;;) {
    const int64_t ms = std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now()));
    const int n = poll(&p, 1, static_cast<int>(ms));
    if (n > 0) break;
    if (n == 0) return std::nullopt;
    if (errno != EINTR) return errno;
  }
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

}  // namespace

absl::StatusOr<ClosedEndpoint> ClosedEndpoint::Create() {
  auto port = common::ReserveFreePort();
  if (!port.ok()) return port.status();
  return ClosedEndpoint(std::move(*port));
}

absl::StatusOr<std::unique_ptr<BlackholeEndpoint>> BlackholeEndpoint::Create() {
  auto port = common::ReserveFreePort();
  if (!port.ok()) return port.status();
  const int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in addr = Loopback(port->port());
  // The port may have connections in TIME_WAIT from an earlier user (as
  // ReserveFreePort's own check allows).
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // Backlog 0: the accept queue holds one connection (the kernel tests
  // "queued > backlog"); once it does, every further SYN is dropped.
  if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(lfd, 0) != 0) {
    const int err = errno;
    close(lfd);
    return absl::InternalError(absl::StrCat("bind/listen: ", std::strerror(err)));
  }
  const int filler = StartConnect(port->port());
  const std::optional<int> err =
      filler < 0 ? std::optional<int>(errno) : AwaitConnect(filler, absl::Seconds(5));
  if (!err.has_value() || *err != 0) {
    if (filler >= 0) close(filler);
    close(lfd);
    return absl::InternalError(absl::StrCat(
        "could not fill the accept queue: ",
        err.has_value() ? std::strerror(*err) : "connect still in progress after 5 s"));
  }
  return std::unique_ptr<BlackholeEndpoint>(new BlackholeEndpoint(std::move(*port), lfd, filler));
}

BlackholeEndpoint::~BlackholeEndpoint() {
  close(filler_fd_);
  close(listen_fd_);
}

std::optional<absl::Duration> ConnectTime(int port, absl::Duration limit) {
  const absl::Time start = absl::Now();
  const int fd = StartConnect(port);
  if (fd < 0) return absl::ZeroDuration();
  const std::optional<int> err = AwaitConnect(fd, limit);
  close(fd);
  if (!err.has_value()) return std::nullopt;
  return absl::Now() - start;
}

}  // namespace ds::client::testing
