// 6.824's jobcount app: every map leaves a marker file and takes 2-5 s; the
// reduce counts the markers, i.e. how many times Map ran in total.
#include <atomic>
#include <cstdio>
#include <string>

#include "mapreduce/app.h"
#include "mapreduce/apps/timing_util.h"

class JobCount : public ds::mr::App {
 public:
  void Map(std::string_view, std::string_view, ds::mr::Emitter& out) override {
    std::string name =
        "mr-worker-jobcount-" + std::to_string(getpid()) + "-" + std::to_string(count_++);
    if (FILE* f = fopen(name.c_str(), "w")) fclose(f);
    ds::mr::apps::SleepMs(2000 + ds::mr::apps::RandomBelow(3000));
    out.Emit("a", "x");
  }
  std::string Reduce(std::string_view, std::vector<std::string_view>&, ds::mr::Emitter&) override {
    int n = 0;
    ds::mr::apps::ForEachFileWithPrefix("mr-worker-jobcount", [&](const std::string&) { ++n; });
    return std::to_string(n);
  }

 private:
  std::atomic<int> count_{0};
};

DS_MR_APP(JobCount, "jobcount")
