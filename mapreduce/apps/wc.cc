// Word count: words are maximal runs of ASCII letters; output "word count".
#include <string>

#include "mapreduce/app.h"

class WordCount : public ds::mr::App {
 public:
  void Map(std::string_view, std::string_view contents, ds::mr::Emitter& out) override {
    for (std::string_view word : ds::mr::SplitWords(contents)) out.Emit(word, "1");
  }
  std::string Reduce(std::string_view, std::vector<std::string_view>& values,
                     ds::mr::Emitter&) override {
    return std::to_string(values.size());
  }
};

DS_MR_APP(WordCount, "wc")
