// The KV layer over the generic replica-process cluster
// (tests/common/process_cluster.h) for kvraft's multi-process tests: the
// binary name, a Clerk for a cluster, and the shared checks of what the
// clients did (tests/common/kv_checks.h) with a reader for final values.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/clerk.h"
#include "gtest/gtest.h"
#include "tests/common/kv_checks.h"
#include "tests/common/process_cluster.h"

namespace ds::kv::testing {

using ::ds::testing::ProcessCluster;

// The daemon under test: ProcessCluster cluster(kKvServer, 3, flags).
inline constexpr char kKvServer[] = "kvraft-server";

// A blocking Clerk for `cluster`, whose operations give up after `op_timeout`.
inline std::unique_ptr<client::Clerk> NewKvClerk(const ProcessCluster& cluster,
                                                 absl::Duration op_timeout = absl::Seconds(5)) {
  auto c = client::Clerk::Create({.endpoints = cluster.endpoints(),
                                  .operation_timeout = op_timeout,
                                  .attempt_timeout = absl::Milliseconds(500)});
  if (!c.ok()) {
    ADD_FAILURE() << "Clerk::Create: " << c.status();
    std::abort();
  }
  return std::move(*c);
}

// The checks of every multi-process KV test (tests/common/kv_checks.h), for
// kvraft's tests as testing::ExpectLinearizable(history) and
// testing::ExpectAppendsExactlyOnce(appends, KvReader(cluster)).
using ::ds::testing::ExpectAppendsExactlyOnce;
using ::ds::testing::ExpectLinearizable;

// Reads final values for ExpectAppendsExactlyOnce through a Clerk (the unary
// path: a linearizable read at the leader); "" for a missing key.
inline ::ds::testing::KeyReader KvReader(const ProcessCluster& cluster,
                                         absl::Duration op_timeout = absl::Seconds(20)) {
  std::shared_ptr<client::Clerk> clerk = NewKvClerk(cluster, op_timeout);
  return [clerk](const std::string& key) -> absl::StatusOr<std::string> {
    absl::StatusOr<client::GetResult> r = clerk->Get(key);
    if (!r.ok()) return r.status();
    return r->value;
  };
}

}  // namespace ds::kv::testing
