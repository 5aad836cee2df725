// Inverted index: for each word, "<number of documents> <doc1>,<doc2>,..."
// (documents sorted), as the 6.824 indexer app. A value is a comma-separated
// sorted list of documents: the map emits one document, the combiner and the
// reducer take the union of lists (document names must not contain commas).
#include <algorithm>
#include <set>
#include <string>

#include "mapreduce/app.h"

namespace {

std::set<std::string_view> Union(const std::vector<std::string_view>& values) {
  std::set<std::string_view> docs;
  for (std::string_view v : values) {
    size_t start = 0;
    while (start <= v.size()) {
      size_t comma = v.find(',', start);
      if (comma == std::string_view::npos) comma = v.size();
      docs.insert(v.substr(start, comma - start));
      start = comma + 1;
    }
  }
  return docs;
}

std::string Join(const std::set<std::string_view>& docs) {
  std::string out;
  for (std::string_view d : docs) {
    if (!out.empty()) out += ',';
    out += d;
  }
  return out;
}

}  // namespace

class Indexer : public ds::mr::App {
 public:
  void Map(std::string_view document, std::string_view contents, ds::mr::Emitter& out) override {
    std::set<std::string_view> words;
    ds::mr::ForEachWord(contents, [&](std::string_view word) { words.insert(word); });
    for (std::string_view word : words) out.Emit(word, document);
  }
  std::string Reduce(std::string_view, std::vector<std::string_view>& values,
                     ds::mr::Emitter&) override {
    std::set<std::string_view> docs = Union(values);
    return std::to_string(docs.size()) + " " + Join(docs);
  }
  std::string Combine(std::string_view, std::vector<std::string_view>& values,
                      ds::mr::Emitter&) override {
    return Join(Union(values));
  }
};

DS_MR_APP(Indexer, "indexer")
