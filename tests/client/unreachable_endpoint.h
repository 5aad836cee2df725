// Endpoints that never answer, for tests of how clients cope with a dead or
// cut-off replica, without root (no iptables):
// - ClosedEndpoint: a reserved loopback port with nothing listening; the
//   kernel refuses a connect at once (RST), as for a crashed replica.
// - BlackholeEndpoint: a listening socket whose accept queue is full (backlog
//   0, one connection queued and never accepted). Linux then drops further
//   SYNs, so a connect hangs in SYN_SENT (retransmitting) instead of failing,
//   as for a replica behind a partition that drops packets.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/net.h"

namespace ds::client::testing {

class ClosedEndpoint {
 public:
  static absl::StatusOr<ClosedEndpoint> Create();
  std::string address() const { return port_.address(); }

 private:
  explicit ClosedEndpoint(common::PortReservation port) : port_(std::move(port)) {}
  common::PortReservation port_;  // held, so no other test listens on it
};

class BlackholeEndpoint {
 public:
  // Fails if the accept queue could not be filled.
  static absl::StatusOr<std::unique_ptr<BlackholeEndpoint>> Create();
  ~BlackholeEndpoint();
  BlackholeEndpoint(const BlackholeEndpoint&) = delete;
  BlackholeEndpoint& operator=(const BlackholeEndpoint&) = delete;

  std::string address() const { return port_.address(); }
  int port() const { return port_.port(); }

 private:
  BlackholeEndpoint(common::PortReservation port, int listen_fd, int filler_fd)
      : port_(std::move(port)), listen_fd_(listen_fd), filler_fd_(filler_fd) {}

  common::PortReservation port_;
  int listen_fd_;
  int filler_fd_;  // the connection that fills the accept queue
};

// How long a plain TCP connect to 127.0.0.1:`port` takes to succeed or fail;
// nullopt if it is still in progress after `limit` (the SYN was dropped).
std::optional<absl::Duration> ConnectTime(int port, absl::Duration limit);

}  // namespace ds::client::testing
