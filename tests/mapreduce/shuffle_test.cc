// The shuffle's building blocks: runs (grouped, sorted map output), the map
// output buffer with its combiner and spills, and the reduce-side merge.
#include "mapreduce/shuffle.h"

#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "mapreduce/records.h"

namespace ds::mr {
namespace {

class ShuffleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/shuffle_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Every (key, values) of a run file, in order.
  std::vector<std::pair<std::string, std::vector<std::string>>> ReadRun(const std::string& path) {
    std::vector<std::pair<std::string, std::vector<std::string>>> out;
    auto f = MappedFile::Open(path);
    EXPECT_TRUE(f.ok()) << f.status();
    if (!f.ok()) return out;
    RunReader reader((*f)->data());
    while (true) {
      auto more = reader.Next();
      EXPECT_TRUE(more.ok()) << more.status();
      if (!more.ok() || !*more) break;
      std::vector<std::string_view> values;
      EXPECT_TRUE(reader.Values(&values).ok());
      out.emplace_back(std::string(reader.key()),
                       std::vector<std::string>(values.begin(), values.end()));
    }
    return out;
  }

  std::vector<std::string> Paths(int reduces, const std::string& name) {
    std::vector<std::string> paths;
    for (int r = 0; r < reduces; ++r) paths.push_back(absl::StrCat(dir_, "/", name, "-", r));
    return paths;
  }

  std::string dir_;
};

// Sums decimal values: word count's combiner.
absl::Status Sum(std::string_view, std::vector<std::string_view>& values,
                 const std::function<void(std::string_view)>& emit) {
  int64_t n = 0;
  for (std::string_view v : values) n += std::stoll(std::string(v));
  emit(std::to_string(n));
  return absl::OkStatus();
}

TEST_F(ShuffleTest, RunsAreSortedByKeyAndPartitionedByKeyHash) {
  MapOutputBuffer buffer({.reduces = 3, .temp_dir = dir_, .temp_prefix = "t-"});
  std::map<std::string, std::vector<std::string>> want;
  for (int i = 0; i < 1000; ++i) {
    std::string key = absl::StrCat("k", i % 37), value = absl::StrCat("v", (i * 7919) % 101);
    buffer.Add(key, value);
    want[key].push_back(value);
  }
  std::vector<std::string> paths = Paths(3, "run");
  ASSERT_TRUE(buffer.Finish(paths).ok());
  size_t keys = 0;
  for (int r = 0; r < 3; ++r) {
    auto run = ReadRun(paths[r]);
    for (size_t i = 0; i < run.size(); ++i) {
      const auto& [key, values] = run[i];
      if (i > 0) {
        EXPECT_LT(run[i - 1].first, key);
      }
      EXPECT_EQ(KeyHash(key) % 3, static_cast<uint32_t>(r)) << key;
      std::vector<std::string> sorted = want[key];
      std::sort(sorted.begin(), sorted.end());
      EXPECT_EQ(values, sorted) << key;
      ++keys;
    }
  }
  EXPECT_EQ(keys, want.size());
  EXPECT_EQ(buffer.counters().records_out, 1000);
  EXPECT_EQ(buffer.counters().spilled_runs, 0);
}

TEST_F(ShuffleTest, CombinerFoldsValuesAsTheyPileUpAndAtTheEnd) {
  MapOutputBuffer buffer({.reduces = 2, .temp_dir = dir_, .temp_prefix = "t-", .combine_key = Sum});
  for (int i = 0; i < 10000; ++i) buffer.Add(i % 3 == 0 ? "the" : absl::StrCat("w", i % 5), "1");
  std::vector<std::string> paths = Paths(2, "run");
  ASSERT_TRUE(buffer.Finish(paths).ok());
  std::map<std::string, std::vector<std::string>> got;
  for (const std::string& p : paths) {
    for (auto& [k, v] : ReadRun(p)) got[k] = v;
  }
  EXPECT_EQ(got["the"], std::vector<std::string>{"3334"});
  int64_t total = 3334;
  for (int j = 0; j < 5; ++j) {
    ASSERT_EQ(got[absl::StrCat("w", j)].size(), 1u);
    total += std::stoll(got[absl::StrCat("w", j)][0]);
  }
  EXPECT_EQ(total, 10000);
  EXPECT_GT(buffer.counters().combine_records_in, 9000);
}

// Past the memory budget the table is spilled as sorted runs; the final runs
// merge them (and combine equal keys across them): same result as no spill.
TEST_F(ShuffleTest, SpillsMergeToTheSameRuns) {
  auto fill = [](MapOutputBuffer& b) {
    for (int i = 0; i < 200000; ++i) b.Add(absl::StrCat("key-", (i * 2654435761u) % 5003), "1");
  };
  MapOutputBuffer small({.reduces = 2,
                         .temp_dir = dir_,
                         .temp_prefix = "s-",
                         .memory_budget_bytes = 64 << 10,
                         .combine_key = Sum});
  MapOutputBuffer large({.reduces = 2, .temp_dir = dir_, .temp_prefix = "l-", .combine_key = Sum});
  fill(small);
  fill(large);
  std::vector<std::string> a = Paths(2, "small"), b = Paths(2, "large");
  ASSERT_TRUE(small.Finish(a).ok());
  ASSERT_TRUE(large.Finish(b).ok());
  EXPECT_GT(small.counters().spilled_runs, 2);
  EXPECT_EQ(large.counters().spilled_runs, 0);
  for (int r = 0; r < 2; ++r) EXPECT_EQ(ReadRun(a[r]), ReadRun(b[r])) << r;
  // Spill files are gone; only the final runs remain.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 4);
}

TEST_F(ShuffleTest, MergeRunsGivesEveryKeyOnceWithAllItsValuesSorted) {
  std::vector<std::string> paths;
  for (int m = 0; m < 3; ++m) {
    MapOutputBuffer buffer({.reduces = 1, .temp_dir = dir_, .temp_prefix = "t-"});
    for (int i = 0; i < 50; ++i) buffer.Add(absl::StrCat("k", (i + m) % 7), absl::StrCat(m, i));
    paths.push_back(absl::StrCat(dir_, "/map-", m));
    ASSERT_TRUE(buffer.Finish({paths.back()}).ok());
  }
  std::vector<std::unique_ptr<MappedFile>> files;
  std::vector<std::string_view> runs;
  for (const std::string& p : paths) {
    files.push_back(std::move(MappedFile::Open(p).value()));
    runs.push_back(files.back()->data());
  }
  std::vector<std::string> keys;
  size_t values_seen = 0;
  ASSERT_TRUE(MergeRuns(runs, [&](std::string_view key, std::vector<std::string_view>& values) {
                EXPECT_TRUE(std::is_sorted(values.begin(), values.end()));
                keys.emplace_back(key);
                values_seen += values.size();
                return absl::OkStatus();
              }).ok());
  EXPECT_EQ(keys, (std::vector<std::string>{"k0", "k1", "k2", "k3", "k4", "k5", "k6"}));
  EXPECT_EQ(values_seen, 150u);
}

TEST_F(ShuffleTest, TruncatedRunIsAnError) {
  MapOutputBuffer buffer({.reduces = 1, .temp_dir = dir_, .temp_prefix = "t-"});
  buffer.Add("alpha", "one");
  buffer.Add("beta", "two");
  std::string path = dir_ + "/run";
  ASSERT_TRUE(buffer.Finish({path}).ok());
  std::string data = ReadFile(path).value();
  std::string cut = data.substr(0, data.size() - 2);
  RunReader reader(cut);
  absl::Status st;
  while (true) {
    auto more = reader.Next();
    if (!more.ok()) {
      st = more.status();
      break;
    }
    if (!*more) break;
    std::vector<std::string_view> v;
    st = reader.Values(&v);
    if (!st.ok()) break;
  }
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace ds::mr
