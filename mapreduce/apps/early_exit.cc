// 6.824's early_exit app: the reduces of the "sherlock" and "tom" inputs take
// 3 s longer, so a worker or coordinator that quits early loses output.
#include <string>

#include "mapreduce/app.h"
#include "mapreduce/apps/timing_util.h"

class EarlyExit : public ds::mr::App {
 public:
  void Map(std::string_view file, std::string_view, ds::mr::Emitter& out) override {
    out.Emit(file, "1");
  }
  std::string Reduce(std::string_view key, std::vector<std::string_view>& values,
                     ds::mr::Emitter&) override {
    if (key.find("sherlock") != std::string_view::npos ||
        key.find("tom") != std::string_view::npos) {
      ds::mr::apps::SleepMs(3000);
    }
    return std::to_string(values.size());
  }
};

DS_MR_APP(EarlyExit, "early_exit")
