// Distributed grep: every line containing $MR_GREP_PATTERN (a plain substring;
// default "MapReduce") as "<file>:<line number> <line>". Counts matches in the
// user counter "matches".
#include <cstdio>
#include <cstdlib>
#include <string>

#include "mapreduce/app.h"

class Grep : public ds::mr::App {
 public:
  void Map(std::string_view file, std::string_view contents, ds::mr::Emitter& out) override {
    const char* env = std::getenv("MR_GREP_PATTERN");
    std::string_view pattern = env != nullptr ? env : "MapReduce";
    size_t line_no = 0, start = 0;
    while (start < contents.size()) {
      size_t end = contents.find('\n', start);
      if (end == std::string_view::npos) end = contents.size();
      ++line_no;
      std::string_view line = contents.substr(start, end - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.find(pattern) != std::string_view::npos) {
        char num[32];
        // Zero-padded so that keys sort in line order.
        snprintf(num, sizeof(num), ":%08zu", line_no);
        out.Emit(std::string(file) + num, line);
        out.Count("matches");
      }
      start = end + 1;
    }
  }
  std::string Reduce(std::string_view, std::vector<std::string_view>& values,
                     ds::mr::Emitter&) override {
    return std::string(values.front());
  }
};

DS_MR_APP(Grep, "grep")
