// Helpers shared by the scenario tests: cluster construction and assertion
// macros that print the failing status (with the violating step's time).
#pragma once

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "tests/raft/sim/cluster.h"

namespace ds::raft::sim {

// DSTACK_RAFT_SEED_OFFSET=k shifts every scenario's seed, to run the scenarios
// under other schedules (each seed is still deterministic).
inline ClusterOptions ScenarioOptions(int nodes, uint64_t seed, uint64_t snapshot_interval = 0) {
  ClusterOptions o;
  o.nodes = nodes;
  const char* offset = std::getenv("DSTACK_RAFT_SEED_OFFSET");
  o.seed = seed + (offset != nullptr ? std::strtoull(offset, nullptr, 10) * 1000 : 0);
  o.snapshot_interval = snapshot_interval;
  o.verbose = std::getenv("DSTACK_RAFT_VERBOSE") != nullptr;  // event trace to stdout
  return o;
}

// A random command as 6.824's rand.Int(): unique enough per test.
inline std::string RandCommand(Cluster& c) { return std::to_string(c.rng().Next() >> 1); }

}  // namespace ds::raft::sim

#define SIM_ASSERT_OK(expr)         \
  do {                              \
    const absl::Status _s = (expr); \
    ASSERT_TRUE(_s.ok()) << _s;     \
  } while (0)

// Evaluates a StatusOr expression, failing the test on error, and assigns it.
#define SIM_CONCAT_INNER(a, b) a##b
#define SIM_CONCAT(a, b) SIM_CONCAT_INNER(a, b)
#define SIM_ASSIGN_OR_FAIL(lhs, expr) SIM_ASSIGN_OR_FAIL_IMPL(SIM_CONCAT(_so_, __LINE__), lhs, expr)
#define SIM_ASSIGN_OR_FAIL_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                            \
  ASSERT_TRUE(tmp.ok()) << tmp.status();        \
  lhs = *std::move(tmp)
