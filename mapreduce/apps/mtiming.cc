// 6.824's mtiming app: each map records when it ran and how many map workers
// were running at once (map-parallelism test).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include "mapreduce/app.h"
#include "mapreduce/apps/timing_util.h"

class MapTiming : public ds::mr::App {
 public:
  void Map(std::string_view, std::string_view, ds::mr::Emitter& out) override {
    double now =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    int n = ds::mr::apps::CountParallel("map");
    std::string pid = std::to_string(getpid());
    char t[64];
    snprintf(t, sizeof(t), "%.1f", now);
    out.Emit("times-" + pid, t);
    out.Emit("parallel-" + pid, std::to_string(n));
  }
  std::string Reduce(std::string_view, std::vector<std::string_view>& values,
                     ds::mr::Emitter&) override {
    std::sort(values.begin(), values.end());
    std::string result;
    for (size_t i = 0; i < values.size(); ++i) {
      if (i > 0) result += " ";
      result += values[i];
    }
    return result;
  }
};

DS_MR_APP(MapTiming, "mtiming")
