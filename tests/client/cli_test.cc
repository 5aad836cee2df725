// kvctl and kvbench, the real binaries, against the fake cluster.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/time/clock.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "tests/client/fake_kv_service.h"
#include "tests/client/unreachable_endpoint.h"

namespace ds::client {
namespace {

using testing::BlackholeEndpoint;
using testing::ClosedEndpoint;
using testing::FakeKvCluster;

struct Result {
  int exit_code;
  std::string output;   // stdout and stderr
  absl::Duration took;  // from the start of the process to its exit
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/kvctl_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // "--endpoints=" a reserved port where nothing listens (held by the test).
  std::string DeadEndpointsFlag() {
    auto closed = ClosedEndpoint::Create();
    EXPECT_TRUE(closed.ok()) << closed.status();
    if (!closed.ok()) return "--endpoints=127.0.0.1:1";
    closed_.push_back(std::move(*closed));
    return "--endpoints=" + closed_.back().address();
  }

  Result Kvctl(std::vector<std::string> args, const std::string& stdin_text = "",
               std::vector<std::string> env = {}) {
    return Run("kvctl", std::move(args), stdin_text, std::move(env));
  }

  Result Run(const std::string& binary, std::vector<std::string> args,
             const std::string& stdin_text = "", std::vector<std::string> env = {}) {
    std::string log = dir_ + "/out." + std::to_string(runs_);
    std::string in = dir_ + "/in." + std::to_string(runs_++);
    std::ofstream(in) << stdin_text;
    args.insert(args.begin(), common::BinaryPath(binary));
    const absl::Time start = absl::Now();
    auto p =
        common::Subprocess::Start({.argv = args, .log_path = log, .stdin_path = in, .env = env});
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return {-1, "", absl::ZeroDuration()};
    auto code = (*p)->WaitFor(absl::Seconds(30));
    const absl::Duration took = absl::Now() - start;
    EXPECT_TRUE(code.has_value()) << binary << " hung";
    std::stringstream ss;
    ss << std::ifstream(log).rdbuf();
    return {code.value_or(-1), ss.str(), took};
  }

  std::string dir_;
  int runs_ = 0;
  std::vector<ClosedEndpoint> closed_;
};

TEST_F(CliTest, PutGetAppendDel) {
  FakeKvCluster cluster(3);
  cluster.set_leader(1);
  std::string ep = "--endpoints=" + cluster.endpoints_flag();
  EXPECT_EQ(Kvctl({ep, "put", "k", "hello"}).output, "OK\n");
  EXPECT_EQ(Kvctl({ep, "append", "k", " world"}).output, "OK\n");
  Result get = Kvctl({ep, "get", "k"});
  EXPECT_EQ(get.exit_code, 0);
  EXPECT_EQ(get.output, "hello world\n");
  EXPECT_EQ(Kvctl({ep, "del", "k"}).output, "1\n");
  Result missing = Kvctl({ep, "get", "k"});
  EXPECT_EQ(missing.exit_code, 0);
  EXPECT_EQ(missing.output, "\n");
  // One session per invocation that writes (put, append, del); gets need none.
  EXPECT_EQ(cluster.sessions_used(), 3);
}

TEST_F(CliTest, JsonOutputAndEnvironmentEndpoints) {
  FakeKvCluster cluster(1);
  std::vector<std::string> env = {"KVCTL_ENDPOINTS=" + cluster.endpoints_flag()};
  EXPECT_EQ(Kvctl({"put", "k", "v\"1"}, "", env).exit_code, 0);
  EXPECT_EQ(Kvctl({"-w", "json", "get", "k"}, "", env).output,
            "{\"key\":\"k\",\"found\":true,\"value\":\"v\\\"1\"}\n");
  Result status = Kvctl({"--write-out=json", "endpoint", "status"}, "", env);
  EXPECT_EQ(status.exit_code, 0);
  EXPECT_NE(status.output.find("\"role\":\"leader\""), std::string::npos) << status.output;
}

// --flagfile: flags one per line with dashes (as systemd units pass them),
// comments and blank lines skipped, later command-line flags win; a missing
// file or a line that is not a flag is a usage error (2) naming the file.
TEST_F(CliTest, FlagFile) {
  FakeKvCluster cluster(1);
  const std::string file = dir_ + "/kvctl.flags";
  std::ofstream(file) << "# kvctl settings\n\n  --endpoints=" << cluster.endpoints_flag()
                      << "  \n--write-out=json\n";
  EXPECT_EQ(Kvctl({"--flagfile=" + file, "put", "k", "v"}).output, "{\"ok\":true}\n");
  EXPECT_EQ(Kvctl({"--flagfile", file, "--write-out=simple", "get", "k"}).output, "v\n");
  const std::string nested = dir_ + "/nested.flags";
  std::ofstream(nested) << "--flagfile=" << file << "\n";
  EXPECT_EQ(Kvctl({"--flagfile=" + nested, "--write-out=simple", "get", "k"}).output, "v\n");
  Result missing = Kvctl({"--flagfile=" + dir_ + "/none", "get", "k"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.output.find("cannot read --flagfile " + dir_ + "/none"), std::string::npos)
      << missing.output;
  const std::string bad = dir_ + "/bad.flags";
  std::ofstream(bad) << "--endpoints=" << cluster.endpoints_flag() << "\nget k\n";
  Result not_flag = Kvctl({"--flagfile=" + bad, "get", "k"});
  EXPECT_EQ(not_flag.exit_code, 2);
  EXPECT_NE(not_flag.output.find(bad + ":2: not a flag: get k"), std::string::npos)
      << not_flag.output;
  const std::string unknown = dir_ + "/unknown.flags";
  std::ofstream(unknown) << "--no-such-flag=1\n";
  Result unknown_flag = Kvctl({"--flagfile=" + unknown, "get", "k"});
  EXPECT_EQ(unknown_flag.exit_code, 2);
  EXPECT_NE(unknown_flag.output.find("unknown flag --no_such_flag"), std::string::npos)
      << unknown_flag.output;
}

TEST_F(CliTest, StdinModeOneResultPerLine) {
  FakeKvCluster cluster(3);
  cluster.set_leader(2);
  Result r = Kvctl({"--endpoints=" + cluster.endpoints_flag()},
                   "put a value with spaces\nappend a !\nget a\n\nget missing\nbogus\ndel a\n");
  EXPECT_EQ(r.exit_code, 2);  // the bogus line is a usage error; the rest still ran
  EXPECT_NE(r.output.find("OK\nOK\nvalue with spaces!\n\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ERROR\n1\n"), std::string::npos) << r.output;
  EXPECT_EQ(cluster.value("a"), "");
  EXPECT_EQ(cluster.sessions_used(), 1);  // all the lines share one session
}

TEST_F(CliTest, EndpointHealthAndStatus) {
  FakeKvCluster cluster(2);
  std::string ep = "--endpoints=" + cluster.endpoints_flag();
  Result health = Kvctl({ep, "endpoint", "health"});
  EXPECT_EQ(health.exit_code, 0);
  EXPECT_NE(health.output.find(cluster.endpoints()[1] + " is healthy"), std::string::npos);
  // From ds.rsm.pb.Replica.Status of each replica; replica 1 (id 1) leads.
  Result status = Kvctl({ep, "endpoint", "status"});
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find(cluster.endpoints()[0] + " id=1 role=leader term=7 leader=1"),
            std::string::npos)
      << status.output;
  EXPECT_NE(status.output.find(cluster.endpoints()[1] + " id=2 role=follower term=7 leader=1"),
            std::string::npos)
      << status.output;
  Result down = Kvctl({DeadEndpointsFlag(), "--timeout=300ms", "endpoint", "health"});
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_NE(down.output.find("is unhealthy"), std::string::npos) << down.output;
}

TEST_F(CliTest, ErrorsHaveClearMessagesAndExitCodes) {
  Result no_endpoints = Kvctl({"get", "k"});
  EXPECT_EQ(no_endpoints.exit_code, 2);
  EXPECT_NE(no_endpoints.output.find("--endpoints"), std::string::npos) << no_endpoints.output;
  EXPECT_EQ(Kvctl({"--endpoints=nohost", "get", "k"}).exit_code, 2);
  FakeKvCluster cluster(1);
  std::string ep = "--endpoints=" + cluster.endpoints_flag();
  Result bad = Kvctl({ep, "put", "onlykey"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("put takes KEY VALUE"), std::string::npos) << bad.output;
  EXPECT_EQ(Kvctl({ep, "put", "", "v"}).exit_code, 2);  // server: empty key
  absl::Time start = absl::Now();
  Result timeout = Kvctl({DeadEndpointsFlag(), "--timeout=500ms", "get", "k"});
  EXPECT_EQ(timeout.exit_code, 1);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  Result help = Kvctl({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.output.find("endpoint status"), std::string::npos);
  EXPECT_NE(help.output.find("--endpoints"), std::string::npos);
}

TEST_F(CliTest, PutIsOneLogEntry) {
  FakeKvCluster cluster(3);
  cluster.set_leader(2);
  Result put = Kvctl({"--endpoints=" + cluster.endpoints_flag(), "put", "k", "v"});
  EXPECT_EQ(put.exit_code, 0) << put.output;
  EXPECT_EQ(cluster.log_entries(), 1u) << "the session cost an entry of its own";
  EXPECT_EQ(cluster.value("k"), "v");
}

// A dead first endpoint must not cost a kvctl invocation an attempt timeout
// (2 s with --timeout=8s): the leader search asks every replica at once and
// the probe still hanging on the dead endpoint is cancelled at exit. Budget:
// what the dead endpoint adds to an invocation with every endpoint alive is
// under 250 ms, comparing the best of 3 runs of each, interleaved. (Not an
// absolute 250 ms: under ASan on a loaded 2-core machine, starting the process
// alone has taken longer. Paying the attempt timeout shows in every run, so
// the best of 3 still catches it, and filters out load hiccups.)
TEST_F(CliTest, PutWithADeadFirstEndpointIsFast) {
  FakeKvCluster cluster(3);
  cluster.set_leader(1);
  auto closed = ClosedEndpoint::Create();
  ASSERT_TRUE(closed.ok()) << closed.status();
  auto hole = BlackholeEndpoint::Create();
  ASSERT_TRUE(hole.ok()) << hole.status();
  ASSERT_FALSE(testing::ConnectTime((*hole)->port(), absl::Milliseconds(300)).has_value())
      << "a connect to the blackhole finished: the test would prove nothing";

  struct Variant {
    const char* name;
    std::string first_endpoint;  // "" for none
    absl::Duration best = absl::InfiniteDuration();
  };
  std::vector<Variant> variants = {
      {"all endpoints alive", ""},
      {"refusing first endpoint", closed->address()},
      {"blackholed first endpoint", (*hole)->address()},
  };
  int value = 0;
  for (int round = 0; round < 3; ++round) {
    for (Variant& v : variants) {
      std::string endpoints = cluster.endpoints_flag();
      if (!v.first_endpoint.empty()) endpoints = v.first_endpoint + "," + endpoints;
      const std::string put_value = std::to_string(++value);
      Result r = Kvctl({"--endpoints=" + endpoints, "--timeout=8s", "put", "k", put_value});
      EXPECT_EQ(r.exit_code, 0) << v.name << ": " << r.output;
      EXPECT_EQ(cluster.value("k"), put_value) << v.name;
      std::printf("  kvctl put, %s: %s\n", v.name, absl::FormatDuration(r.took).c_str());
      v.best = std::min(v.best, r.took);
    }
  }
  const absl::Duration baseline = variants[0].best;
  for (size_t i = 1; i < variants.size(); ++i) {
    EXPECT_LT(variants[i].best - baseline, absl::Milliseconds(250))
        << variants[i].name << ": best of 3 " << variants[i].best << " vs " << baseline
        << " with every endpoint alive";
  }
}

TEST_F(CliTest, KvbenchReportsThroughputAndLatency) {
  FakeKvCluster cluster(3);
  cluster.set_leader(1);
  Result r = Run("kvbench", {"--endpoints=" + cluster.endpoints_flag(), "--clients=4", "--conns=2",
                             "--duration=1s", "--keys=10", "--value_size=8", "-w", "json"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"clients\":4,\"conns\":2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"errors\":0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"p99\":"), std::string::npos) << r.output;
  EXPECT_GT(cluster.applied_writes(), 0);
  EXPECT_LE(cluster.sessions_used(), 4);  // at most one session per client
}

TEST_F(CliTest, KvbenchRejectsBadFlagsAndReportsFailures) {
  EXPECT_EQ(Run("kvbench", {DeadEndpointsFlag(), "--read_ratio=1.5"}).exit_code, 2);
  EXPECT_EQ(Run("kvbench", {"--clients=2"}).exit_code, 2);
  Result down =
      Run("kvbench", {DeadEndpointsFlag(), "--clients=1", "--duration=500ms", "--timeout=200ms"});
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_NE(down.output.find("operations failed"), std::string::npos) << down.output;
}

}  // namespace
}  // namespace ds::client
