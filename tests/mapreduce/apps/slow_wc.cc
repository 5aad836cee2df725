// Test app: word count (same output as the bundled wc) that dawdles when
// $SLOW_WC_MS is set: that long per map and per single-letter key in reduce, so
// a test can act while a job is in its map or in its reduce phase.
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "mapreduce/app.h"

namespace {

void Dawdle() {
  const char* ms = std::getenv("SLOW_WC_MS");
  if (ms != nullptr) std::this_thread::sleep_for(std::chrono::milliseconds(std::atol(ms)));
}

}  // namespace

class SlowWordCount : public ds::mr::App {
 public:
  void Map(std::string_view, std::string_view contents, ds::mr::Emitter& out) override {
    Dawdle();
    for (std::string_view w : ds::mr::SplitWords(contents)) out.Emit(w, "1");
  }
  std::string Reduce(std::string_view key, std::vector<std::string_view>& values,
                     ds::mr::Emitter&) override {
    if (key.size() == 1) Dawdle();
    return std::to_string(values.size());
  }
};

DS_MR_APP(SlowWordCount, "slow_wc")
