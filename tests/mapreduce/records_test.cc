// The worker's building blocks: the 6.824 partition hash, intermediate record
// files, input splits and the external sort with spills.
#include "mapreduce/records.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/common/temp_dir.h"

namespace ds::mr {
namespace {

using ::ds::testing::TempDir;

TEST(KeyHash, PartitionsLikeThe6824Ihash) {
  // Values from running the lab's ihash(key) % 10.
  EXPECT_EQ(KeyHash("a") % 10, 2u);
  EXPECT_EQ(KeyHash("b") % 10, 9u);
  EXPECT_EQ(KeyHash("c") % 10, 0u);
  EXPECT_EQ(KeyHash("d") % 10, 5u);
  EXPECT_EQ(KeyHash("the") % 10, 2u);
  EXPECT_EQ(KeyHash("A") % 10, 4u);
}

TEST(RecordFile, RoundTripsAndDetectsTruncation) {
  TempDir dir;
  std::string path = dir.path() + "/f";
  auto w = RecordWriter::Create(path);
  ASSERT_TRUE(w.ok());
  (*w)->Write("key", "value");
  (*w)->Write("", std::string("with\0nul", 8));
  ASSERT_TRUE((*w)->Close().ok());
  auto r = RecordReader::Open(path);
  ASSERT_TRUE(r.ok());
  std::string k, v;
  ASSERT_TRUE(*(*r)->Next(&k, &v));
  EXPECT_EQ(k, "key");
  EXPECT_EQ(v, "value");
  ASSERT_TRUE(*(*r)->Next(&k, &v));
  EXPECT_EQ(k, "");
  EXPECT_EQ(v, std::string("with\0nul", 8));
  EXPECT_FALSE(*(*r)->Next(&k, &v));

  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 1);
  auto t = RecordReader::Open(path);
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(*(*t)->Next(&k, &v));
  EXPECT_EQ((*t)->Next(&k, &v).status().code(), absl::StatusCode::kDataLoss);
}

// Whatever the split size, consecutive splits give every line of the file to
// exactly one split, whole.
TEST(ReadSplit, ConsecutiveSplitsCoverEveryLineOnce) {
  TempDir dir;
  std::string path = dir.path() + "/in.txt";
  std::string text;
  std::mt19937 rng(7);
  for (int i = 0; i < 300; ++i) {
    text += absl::StrCat("line", i, std::string(rng() % 40, 'x'));
    if (i % 17 != 0) text += "\n";  // some lines run into the next, some end the file
  }
  if (text.back() == '\n') text.pop_back();  // no newline at the very end
  std::ofstream(path, std::ios::binary) << text;
  for (uint64_t split : {1u, 2u, 7u, 50u, 4096u, 100000u}) {
    std::string joined;
    for (uint64_t off = 0; off < text.size(); off += split) {
      auto part = ReadSplit(path, off, std::min<uint64_t>(split, text.size() - off));
      ASSERT_TRUE(part.ok()) << part.status();
      joined += *part;
      if (!part->empty() && joined.size() < text.size()) {
        EXPECT_EQ(part->back(), '\n') << "a split ended inside a line, split " << split;
      }
    }
    EXPECT_EQ(joined, text) << "split size " << split;
  }
  EXPECT_EQ(ReadSplit(dir.path() + "/missing", 0, 10).status().code(), absl::StatusCode::kNotFound);
}

TEST(ExternalSorter, SpillsAndMergesInKeyThenValueOrder) {
  TempDir dir;
  std::vector<std::pair<std::string, std::string>> records;
  std::mt19937 rng(1);
  for (int i = 0; i < 5000; ++i) {
    records.emplace_back(absl::StrCat("k", rng() % 300), absl::StrCat("v", rng() % 1000));
  }
  ExternalSorter sorter(dir.path(), /*memory_budget_bytes=*/4096);
  for (const auto& [k, v] : records) ASSERT_TRUE(sorter.Add(k, v).ok());
  EXPECT_GT(sorter.spilled_runs(), 10);
  std::vector<std::pair<std::string, std::string>> out;
  ASSERT_TRUE(sorter
                  .ForEach([&](std::string_view k, std::string_view v) {
                    out.emplace_back(std::string(k), std::string(v));
                    return absl::OkStatus();
                  })
                  .ok());
  std::sort(records.begin(), records.end());
  EXPECT_EQ(out, records);
}

// Keys around the 8-byte prefix the sort compares first: shorter keys, zero
// bytes, long keys sharing a prefix, all ordered byte-wise like std::string.
TEST(ExternalSorter, OrdersKeysByteWise) {
  TempDir dir;
  std::vector<std::pair<std::string, std::string>> records;
  std::mt19937 rng(3);
  const char alphabet[] = {'\0', 'a', 'b', '\xff'};
  for (int i = 0; i < 3000; ++i) {
    std::string key(rng() % 13, ' ');
    for (char& c : key) c = alphabet[rng() % 4];
    records.emplace_back(key, absl::StrCat(rng() % 3));
  }
  ExternalSorter sorter(dir.path(), /*memory_budget_bytes=*/1 << 20);
  for (const auto& [k, v] : records) ASSERT_TRUE(sorter.Add(k, v).ok());
  ASSERT_EQ(sorter.spilled_runs(), 0);
  std::vector<std::pair<std::string, std::string>> out;
  ASSERT_TRUE(sorter
                  .ForEach([&](std::string_view k, std::string_view v) {
                    out.emplace_back(std::string(k), std::string(v));
                    return absl::OkStatus();
                  })
                  .ok());
  std::sort(records.begin(), records.end());
  EXPECT_EQ(out, records);
}

TEST(ExternalSorter, RemovesItsSpillFiles) {
  TempDir dir;
  {
    ExternalSorter sorter(dir.path(), 64);
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(sorter.Add(absl::StrCat(i), "v").ok());
    ASSERT_GT(sorter.spilled_runs(), 0);
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

}  // namespace
}  // namespace ds::mr
