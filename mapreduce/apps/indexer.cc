// Inverted index: for each word, "<number of documents> <doc1>,<doc2>,..."
// (documents sorted), as the 6.824 indexer app.
#include <algorithm>
#include <set>
#include <string>

#include "mapreduce/app.h"

class Indexer : public ds::mr::App {
 public:
  void Map(std::string_view document, std::string_view contents, ds::mr::Emitter& out) override {
    std::set<std::string_view> words;
    for (std::string_view word : ds::mr::SplitWords(contents)) words.insert(word);
    for (std::string_view word : words) out.Emit(word, document);
  }
  std::string Reduce(std::string_view, std::vector<std::string_view>& values,
                     ds::mr::Emitter&) override {
    std::sort(values.begin(), values.end());
    std::string result = std::to_string(values.size()) + " ";
    for (size_t i = 0; i < values.size(); ++i) {
      if (i > 0) result += ",";
      result += values[i];
    }
    return result;
  }
};

DS_MR_APP(Indexer, "indexer")
