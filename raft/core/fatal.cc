#include "raft/core/fatal.h"

#include <cstdio>
#include <cstdlib>

namespace ds::raft {

void Fatal(std::string_view message) {
  std::fprintf(stderr, "raft: %.*s\n", static_cast<int>(message.size()), message.data());
  std::fflush(stderr);
  std::abort();
}

}  // namespace ds::raft
