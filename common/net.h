// Free TCP ports for tests and local clusters.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace ds::common {

// A loopback port that no other user of this helper on the machine holds. The
// reservation is an flock on a file under $TMPDIR/dstack-ports-UID, held for
// the object's lifetime (released by the kernel if the process dies), so tests
// that ctest runs in parallel never pick the same port. Ports come from below
// Linux's ephemeral range, where outgoing connections do not take them.
class PortReservation {
 public:
  PortReservation() = default;
  PortReservation(int port, int lock_fd) : port_(port), lock_fd_(lock_fd) {}
  PortReservation(PortReservation&& other) noexcept;
  PortReservation& operator=(PortReservation&& other) noexcept;
  ~PortReservation();

  int port() const { return port_; }
  // "127.0.0.1:PORT"
  std::string address() const;

 private:
  int port_ = 0;
  int lock_fd_ = -1;
};

// Parses a replica list "1=HOST:PORT,2=HOST:PORT,..." (ids nonzero and unique,
// every address HOST:PORT). kInvalidArgument with the offending entry otherwise.
absl::StatusOr<std::map<uint64_t, std::string>> ParsePeerList(const std::string& list);

// Finds a port that can be bound on 127.0.0.1 right now and reserves it.
absl::StatusOr<PortReservation> ReserveFreePort();

}  // namespace ds::common
