// common/metrics.h (the /metrics endpoint, request histograms, families read
// at scrape time) and the tests' own reader of the text format
// (tests/metrics/scrape.h), without daemons.
#include <cmath>
#include <memory>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "common/metrics.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "tests/metrics/scrape.h"

namespace ds::testing {
namespace {

using ::testing::HasSubstr;

TEST(MetricsText, ParsesHelpTypeLabelsAndSpecialValues) {
  auto m = MetricsText::Parse(
      "# HELP a_total Things done\n"
      "# TYPE a_total counter\n"
      "a_total{op=\"get\",path=\"C:\\\\x \\\"q\\\"\\n\"} 3\n"
      "a_total{op=\"put\",} 4 1700000000000\n"
      "# a comment\n"
      "\n"
      "# TYPE h_seconds histogram\n"
      "h_seconds_bucket{le=\"0.1\"} 1\n"
      "h_seconds_bucket{le=\"+Inf\"} 2\n"
      "h_seconds_sum 0.25\n"
      "h_seconds_count 2\n"
      "q{quantile=\"0.5\"} Nan\n"
      "g -1.5e3\n");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->Type("a_total"), "counter");
  EXPECT_EQ(m->Type("h_seconds"), "histogram");
  EXPECT_EQ(m->Type("g"), "");
  EXPECT_TRUE(m->HasHelp("a_total"));
  EXPECT_EQ(m->Sum("a_total"), 7);
  EXPECT_EQ(m->Sum("a_total", {{"op", "put"}}), 4);
  ASSERT_EQ(m->Find("a_total", {{"op", "get"}}).size(), 1u);
  EXPECT_EQ(m->Find("a_total", {{"op", "get"}})[0].labels.at("path"), "C:\\x \"q\"\n");
  EXPECT_EQ(m->Sum("h_seconds_bucket", {{"le", "+Inf"}}), 2);
  EXPECT_TRUE(std::isnan(m->Find("q")[0].value));
  EXPECT_EQ(m->Sum("g"), -1500);
  EXPECT_FALSE(m->Has("missing"));
}

TEST(MetricsText, RejectsWhatIsNotTheTextFormat) {
  for (const char* text :
       {"a{op=\"x\" 1\n", "a 1 2 3\n", "a\n", "a{op=x} 1\n", "a one\n", "{op=\"x\"} 1\n",
        "a{op=\"x\",op=\"y\"} 1\n", "# TYPE a nonsense\n", "# TYPE a counter\n# TYPE a counter\n",
        "a_total 1\n# TYPE a counter\n"}) {
    EXPECT_FALSE(MetricsText::Parse(text).ok()) << text;
  }
}

class MetricsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = common::MetricsServer::Start("127.0.0.1:0");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  std::unique_ptr<common::MetricsServer> server_;
};

TEST_F(MetricsServerTest, PortZeroBindsAFreePortAndReportsIt) {
  EXPECT_GT(server_->port(), 0);
  EXPECT_EQ(server_->address(), absl::StrCat("127.0.0.1:", server_->port()));
  auto registry = std::make_shared<prometheus::Registry>();
  server_->Register(registry);
  auto m = Scrape(server_->address());
  ASSERT_TRUE(m.ok()) << m.status();
  // The exporter's own metrics.
  EXPECT_EQ(m->Type("exposer_scrapes_total"), "counter");
}

TEST_F(MetricsServerTest, ServesRequestHistogramsByOperation) {
  auto registry = std::make_shared<prometheus::Registry>();
  common::RequestMetrics requests(*registry, "kvraft");
  server_->Register(registry);
  std::function<void(int)> done = [](int) {};
  auto timed = common::TimedReply(&requests, "put", done);
  timed(1);
  timed(2);
  requests.Op("get").Observe(0.003);
  // Concurrent first uses of one operation make one series.
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&] { requests.Op("append").Observe(0.001); });
  for (auto& t : threads) t.join();

  auto m = Scrape(server_->address());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->Type("dstack_request_duration_seconds"), "histogram");
  EXPECT_EQ(m->Sum("dstack_request_duration_seconds_count", {{"service", "kvraft"}, {"op", "put"}}),
            2);
  EXPECT_EQ(m->Sum("dstack_request_duration_seconds_count", {{"op", "get"}}), 1);
  EXPECT_EQ(m->Find("dstack_request_duration_seconds_count", {{"op", "append"}}).size(), 1u);
  EXPECT_EQ(m->Sum("dstack_request_duration_seconds_count", {{"op", "append"}}), 4);
  EXPECT_EQ(m->Sum("dstack_request_duration_seconds_bucket", {{"op", "get"}, {"le", "0.0025"}}), 0);
  EXPECT_EQ(m->Sum("dstack_request_duration_seconds_bucket", {{"op", "get"}, {"le", "0.005"}}), 1);
}

TEST_F(MetricsServerTest, ScrapeCollectableIsReadAtEachScrapeWhileItLives) {
  std::atomic<int> value{7};
  auto gauges = std::make_shared<common::ScrapeCollectable>([&](common::ScrapeWriter& w) {
    w.Gauge("dstack_test_value", "A value read at scrape time");
    w.Sample(value.load(), {{"kind", "a"}});
    w.Counter("dstack_test_reads_total", "A counter kept elsewhere");
    w.Sample(3);
  });
  server_->Register(gauges);
  auto m = Scrape(server_->address());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->Type("dstack_test_value"), "gauge");
  EXPECT_EQ(m->Type("dstack_test_reads_total"), "counter");
  EXPECT_EQ(m->Sum("dstack_test_value", {{"kind", "a"}}), 7);
  value = 9;
  m = Scrape(server_->address());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->Sum("dstack_test_value"), 9);
  gauges.reset();
  m = Scrape(server_->address());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE(m->Has("dstack_test_value"));
}

TEST_F(MetricsServerTest, TwoRegistriesInOneProcessKeepApart) {
  // Two replicas in one process, each with its own registry and endpoint.
  auto other = common::MetricsServer::Start("127.0.0.1:0");
  ASSERT_TRUE(other.ok()) << other.status();
  auto r1 = std::make_shared<prometheus::Registry>();
  auto r2 = std::make_shared<prometheus::Registry>();
  common::RequestMetrics m1(*r1, "kvraft");
  common::RequestMetrics m2(*r2, "kvraft");
  server_->Register(r1);
  (*other)->Register(r2);
  m1.Op("put").Observe(0.001);
  auto s1 = Scrape(server_->address());
  auto s2 = Scrape((*other)->address());
  ASSERT_TRUE(s1.ok() && s2.ok());
  EXPECT_EQ(s1->Sum("dstack_request_duration_seconds_count", {{"op", "put"}}), 1);
  EXPECT_EQ(s2->Sum("dstack_request_duration_seconds_count", {{"op", "put"}}), 0);
}

TEST_F(MetricsServerTest, StopsQuickly) {
  const absl::Time start = absl::Now();
  server_.reset();
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(500));
}

TEST_F(MetricsServerTest, OtherPathsAreNotFound) {
  server_->Register(std::make_shared<prometheus::Registry>());
  auto body = HttpGet(server_->address(), "/nothing");
  EXPECT_FALSE(body.ok());
}

TEST_F(MetricsServerTest, BusyPortAndBadAddressAreErrors) {
  auto busy = common::MetricsServer::Start(server_->address());
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(busy.status().message(), HasSubstr(server_->address()));
  for (const char* bad : {"nonsense", "127.0.0.1:", ":80", "127.0.0.1:99999"}) {
    auto s = common::MetricsServer::Start(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace ds::testing
