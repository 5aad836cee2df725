// Test app: a plugin whose map crashes the process on every call, as buggy
// native code would. The job must fail after --max-attempts, not hang.
#include <cstdlib>

#include "mapreduce/app.h"

class AlwaysCrash : public ds::mr::App {
 public:
  void Map(std::string_view, std::string_view, ds::mr::Emitter&) override { std::abort(); }
  std::string Reduce(std::string_view, std::vector<std::string_view>&, ds::mr::Emitter&) override {
    std::abort();
  }
};

DS_MR_APP(AlwaysCrash, "always_crash")
