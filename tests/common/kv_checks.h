// The checks every multi-process or in-process KV test makes on what its
// clients did, independent of how the cluster runs (processes, in-process
// replicas) and of the client (Clerk, AsyncClerk): the history is
// linearizable, and every append happened exactly once. Link dstack_lincheck.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/lincheck/linearizability.h"

namespace ds::testing {

// The recorded history is linearizable (decided within `budget`: kUnknown
// fails too, so keep workloads spread over several keys).
inline void ExpectLinearizable(const std::vector<lincheck::Operation>& history,
                               absl::Duration budget = absl::Seconds(60)) {
  auto report = lincheck::CheckKvHistory(history, budget);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->result, lincheck::CheckResult::kOk)
      << "history not linearizable: " << report->explanation;
}

// Reads the current value of a key ("" if missing), linearizably.
using KeyReader = std::function<absl::StatusOr<std::string>(const std::string& key)>;

// `appends` maps "key/token;" to whether that append was acknowledged; each
// token (ending in ';', containing no other ';') was appended to its key
// once. Every acknowledged append is in its key's final value exactly once,
// an unacknowledged one (outcome unknown) at most once, and nothing else is
// there. Reads each key's final value once with `read`.
inline void ExpectAppendsExactlyOnce(const std::map<std::string, bool>& appends,
                                     const KeyReader& read) {
  std::map<std::string, std::string> finals;
  for (const auto& [key_token, acked] : appends) {
    const std::string key = key_token.substr(0, key_token.find('/'));
    if (finals.contains(key)) continue;
    absl::StatusOr<std::string> value = read(key);
    ASSERT_TRUE(value.ok()) << "reading " << key << ": " << value.status();
    finals[key] = *value;
  }
  std::map<std::string, int> seen;  // "key/token;" -> count
  for (const auto& [key, value] : finals) {
    for (absl::string_view t : absl::StrSplit(value, ';', absl::SkipEmpty())) {
      seen[absl::StrCat(key, "/", t, ";")]++;
    }
  }
  int acked = 0;
  for (const auto& [key_token, was_acked] : appends) {
    const int count = seen.contains(key_token) ? seen[key_token] : 0;
    if (was_acked) {
      ++acked;
      EXPECT_EQ(count, 1) << "acknowledged append " << key_token << " appears " << count
                          << " times";
    } else {
      EXPECT_LE(count, 1) << "unacknowledged append " << key_token << " appears " << count
                          << " times";
    }
  }
  for (const auto& [key_token, count] : seen) {
    EXPECT_TRUE(appends.contains(key_token)) << key_token << " was never appended";
  }
  EXPECT_GT(acked, 0) << "no append was acknowledged: nothing was checked";
}

}  // namespace ds::testing
