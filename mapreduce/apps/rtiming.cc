// 6.824's rtiming app: each reduce reports how many reduce workers were
// running at once (reduce-parallelism test).
#include <string>

#include "mapreduce/app.h"
#include "mapreduce/apps/timing_util.h"

class ReduceTiming : public ds::mr::App {
 public:
  void Map(std::string_view, std::string_view, ds::mr::Emitter& out) override {
    for (char c = 'a'; c <= 'j'; ++c) out.Emit(std::string(1, c), "1");
  }
  std::string Reduce(std::string_view, std::vector<std::string_view>&, ds::mr::Emitter&) override {
    return std::to_string(ds::mr::apps::CountParallel("reduce"));
  }
};

DS_MR_APP(ReduceTiming, "rtiming")
