#include "common/net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ds::common {
namespace {

constexpr int kFirstPort = 20000;
constexpr int kLastPort = 32000;  // Linux's ephemeral range starts at 32768.

bool CanBind(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

}  // namespace

PortReservation::PortReservation(PortReservation&& other) noexcept
    : port_(other.port_), lock_fd_(other.lock_fd_) {
  other.port_ = 0;
  other.lock_fd_ = -1;
}

PortReservation& PortReservation::operator=(PortReservation&& other) noexcept {
  if (this != &other) {
    if (lock_fd_ >= 0) close(lock_fd_);
    port_ = other.port_;
    lock_fd_ = other.lock_fd_;
    other.port_ = 0;
    other.lock_fd_ = -1;
  }
  return *this;
}

PortReservation::~PortReservation() {
  if (lock_fd_ >= 0) close(lock_fd_);
}

std::string PortReservation::address() const { return absl::StrCat("127.0.0.1:", port_); }

absl::StatusOr<std::map<uint64_t, std::string>> ParsePeerList(const std::string& list) {
  std::map<uint64_t, std::string> peers;
  for (absl::string_view item : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(item, absl::MaxSplits('=', 1));
    uint64_t id = 0;
    int port = 0;
    size_t colon = kv.second.rfind(':');
    if (!absl::SimpleAtoi(kv.first, &id) || id == 0 || colon == absl::string_view::npos ||
        colon == 0 || !absl::SimpleAtoi(kv.second.substr(colon + 1), &port) || port <= 0 ||
        port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad peer '", item, "': want ID=HOST:PORT with a nonzero ID"));
    }
    if (!peers.emplace(id, std::string(kv.second)).second) {
      return absl::InvalidArgumentError(absl::StrCat("peer id ", id, " given twice"));
    }
  }
  if (peers.empty()) return absl::InvalidArgumentError("empty peer list");
  return peers;
}

absl::StatusOr<PortReservation> ReserveFreePort() {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir =
      absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/dstack-ports-", getuid());
  mkdir(dir.c_str(), 0700);  // EEXIST is fine.
  std::random_device rd;
  std::mt19937 rng(rd());  // Not a simulation: any spread over the range will do.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    int port = kFirstPort + static_cast<int>(rng() % (kLastPort - kFirstPort));
    std::string path = absl::StrCat(dir, "/", port);
    int fd = open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) continue;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      close(fd);
      continue;
    }
    if (!CanBind(port)) {
      close(fd);
      continue;
    }
    return PortReservation(port, fd);
  }
  return absl::ResourceExhaustedError("no free loopback port found in 1000 attempts");
}

}  // namespace ds::common
