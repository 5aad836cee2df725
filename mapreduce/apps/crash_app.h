// 6.824's crash app, shared by crash.cc and nocrash.cc: before every map and
// reduce the crash app crashes the worker (33%) or stalls it up to
// $MR_CRASH_MAX_SLEEP_MS (default 10000 ms, 33%); nocrash produces the same
// output without faults (the crash test's expected output).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <string>

#include "mapreduce/app.h"
#include "mapreduce/apps/timing_util.h"

namespace ds::mr::apps {

inline void MaybeCrash() {
  long r = ds::mr::apps::RandomBelow(1000);
  if (r < 330) {
    _exit(1);  // a crash: no clean-up, no report
  } else if (r < 660) {
    const char* env = std::getenv("MR_CRASH_MAX_SLEEP_MS");
    long max_ms = env != nullptr ? std::atol(env) : 10000;
    ds::mr::apps::SleepMs(ds::mr::apps::RandomBelow(std::max(1L, max_ms)));
  }
}

// kCrash = false is the nocrash app: same output, no faults.
template <bool kCrash>
class CrashApp : public ds::mr::App {
 public:
  void Map(std::string_view file, std::string_view contents, ds::mr::Emitter& out) override {
    if (kCrash) MaybeCrash();
    out.Emit("a", file);
    out.Emit("b", std::to_string(file.size()));
    out.Emit("c", std::to_string(contents.size()));
    out.Emit("d", "xyzzy");
  }
  std::string Reduce(std::string_view, std::vector<std::string_view>& values,
                     ds::mr::Emitter&) override {
    if (kCrash) MaybeCrash();
    std::sort(values.begin(), values.end());
    std::string result;
    for (size_t i = 0; i < values.size(); ++i) {
      if (i > 0) result += " ";
      result += values[i];
    }
    return result;
  }
};

}  // namespace ds::mr::apps
