// Small statistics helpers shared by the load tools (kvbench, grpc_floor).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace ds::common {

// The q-quantile (0..1) of an ascending `sorted` sample, nearest rank; 0 for
// an empty sample.
inline int64_t Percentile(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t i = static_cast<size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

}  // namespace ds::common
