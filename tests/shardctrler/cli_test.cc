// kvctl ctrl, the real binary, against real shardctrler-server processes:
// the output formats documented in client/kvctl_ctrl.h and kvctl --help
// (text and -w json, a contract other tools depend on), KVCTL_CONTROLLERS,
// and the exit statuses (0 ok, 1 failed or unreachable, 2 bad usage or input).
#include <signal.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/net.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "tests/common/kvctl_runner.h"
#include "tests/common/process_cluster.h"

namespace ds::ctrl {
namespace {

using ::ds::testing::ProcessCluster;
using Result = ::ds::testing::KvctlResult;
using ::ds::testing::Failed;
using ::ds::testing::Printed;

const std::vector<std::string> kFlags = {"--tick-interval=50ms", "--election-ticks=10",
                                         "--log-level=warn"};

class KvctlCtrl : public ::testing::Test {
 protected:
  // Runs kvctl with `args` (and `env` added to the environment).
  Result Kvctl(const std::vector<std::string>& args, std::vector<std::string> env = {}) {
    return kvctl_.Run(args, std::move(env));
  }

  // Kvctl with --controllers for `cluster`.
  Result Ctrl(ProcessCluster& cluster, std::vector<std::string> args) {
    args.insert(args.begin(), "--controllers=" + cluster.endpoints_flag());
    return Kvctl(args);
  }

  ::ds::testing::KvctlRunner kvctl_;
};

// A 3-replica controller, healthy, with a leader.
void StartCluster(ProcessCluster& cluster) {
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  ASSERT_GE(cluster.WaitForLeader(), 0);
}

TEST_F(KvctlCtrl, JoinLeaveMoveQueryText) {
  ProcessCluster cluster("shardctrler-server", 3, kFlags);
  ASSERT_NO_FATAL_FAILURE(StartCluster(cluster));

  EXPECT_TRUE(
      Printed(Ctrl(cluster, {"ctrl", "query"}), "num 0\ngid 0 shards 0,1,2,3,4,5,6,7,8,9\n"));
  EXPECT_TRUE(
      Printed(Ctrl(cluster, {"ctrl", "join", "1=h1:1,h2:2,h3:3"}), "OK (configuration 1)\n"));
  EXPECT_TRUE(Printed(Ctrl(cluster, {"ctrl", "query"}),
                      "num 1\ngid 1 shards 0,1,2,3,4,5,6,7,8,9 servers h1:1,h2:2,h3:3\n"));
  // Two groups in one join: one configuration.
  EXPECT_TRUE(
      Printed(Ctrl(cluster, {"ctrl", "join", "3=h5:5,h6:6", "2=h4:4"}), "OK (configuration 2)\n"));
  const std::string config2 =
      "num 2\n"
      "gid 1 shards 0,1,2,3 servers h1:1,h2:2,h3:3\n"
      "gid 2 shards 4,5,6 servers h4:4\n"
      "gid 3 shards 7,8,9 servers h5:5,h6:6\n";
  EXPECT_TRUE(Printed(Ctrl(cluster, {"ctrl", "query"}), config2));
  EXPECT_TRUE(Printed(Ctrl(cluster, {"ctrl", "move", "0", "3"}), "OK (configuration 3)\n"));
  EXPECT_TRUE(Printed(Ctrl(cluster, {"ctrl", "query"}),
                      "num 3\n"
                      "gid 1 shards 1,2,3 servers h1:1,h2:2,h3:3\n"
                      "gid 2 shards 4,5,6 servers h4:4\n"
                      "gid 3 shards 0,7,8,9 servers h5:5,h6:6\n"));
  EXPECT_TRUE(Printed(Ctrl(cluster, {"ctrl", "leave", "2", "1"}), "OK (configuration 4)\n"));
  const std::string config4 =
      "num 4\n"
      "gid 3 shards 0,1,2,3,4,5,6,7,8,9 servers h5:5,h6:6\n";
  EXPECT_TRUE(Printed(Ctrl(cluster, {"ctrl", "query"}), config4));

  // Old configurations by number; past the latest: the latest.
  EXPECT_TRUE(Printed(Ctrl(cluster, {"ctrl", "query", "2"}), config2));
  EXPECT_TRUE(
      Printed(Ctrl(cluster, {"ctrl", "query", "0"}), "num 0\ngid 0 shards 0,1,2,3,4,5,6,7,8,9\n"));
  EXPECT_TRUE(Printed(Ctrl(cluster, {"ctrl", "query", "99"}), config4));

  // Leaving every group puts the shards back on gid 0.
  EXPECT_TRUE(Printed(Ctrl(cluster, {"ctrl", "leave", "3"}), "OK (configuration 5)\n"));
  EXPECT_TRUE(
      Printed(Ctrl(cluster, {"ctrl", "query"}), "num 5\ngid 0 shards 0,1,2,3,4,5,6,7,8,9\n"));
}

TEST_F(KvctlCtrl, JsonOutput) {
  ProcessCluster cluster("shardctrler-server", 3, kFlags);
  ASSERT_NO_FATAL_FAILURE(StartCluster(cluster));

  EXPECT_TRUE(Printed(Ctrl(cluster, {"-w", "json", "ctrl", "query"}),
                      "{\"num\":0,\"shards\":[0,0,0,0,0,0,0,0,0,0],\"groups\":{}}\n"));
  EXPECT_TRUE(Printed(Ctrl(cluster, {"-w", "json", "ctrl", "join", "1=h1:1,h2:2", "2=h3:3"}),
                      "{\"ok\":true,\"num\":1}\n"));
  const std::string config1 =
      "{\"num\":1,\"shards\":[1,1,1,1,1,2,2,2,2,2],"
      "\"groups\":{\"1\":[\"h1:1\",\"h2:2\"],\"2\":[\"h3:3\"]}}\n";
  EXPECT_TRUE(Printed(Ctrl(cluster, {"-w", "json", "ctrl", "query"}), config1));
  EXPECT_TRUE(Printed(Ctrl(cluster, {"--write-out=json", "ctrl", "move", "9", "1"}),
                      "{\"ok\":true,\"num\":2}\n"));
  EXPECT_TRUE(
      Printed(Ctrl(cluster, {"-w", "json", "ctrl", "leave", "2"}), "{\"ok\":true,\"num\":3}\n"));
  EXPECT_TRUE(Printed(Ctrl(cluster, {"-w", "json", "ctrl", "query", "1"}), config1));
  EXPECT_TRUE(Printed(Ctrl(cluster, {"--write-out", "json", "ctrl", "query", "2"}),
                      "{\"num\":2,\"shards\":[1,1,1,1,1,2,2,2,2,1],"
                      "\"groups\":{\"1\":[\"h1:1\",\"h2:2\"],\"2\":[\"h3:3\"]}}\n"));
  EXPECT_TRUE(Printed(
      Ctrl(cluster, {"-w", "json", "ctrl", "query"}),
      "{\"num\":3,\"shards\":[1,1,1,1,1,1,1,1,1,1],\"groups\":{\"1\":[\"h1:1\",\"h2:2\"]}}\n"));
}

// With fewer shards than groups some group owns none: "shards -" in text, no
// entry in "shards" in JSON. The count comes from --shards.
TEST_F(KvctlCtrl, GroupsWithoutShards) {
  std::vector<std::string> flags = kFlags;
  flags.push_back("--shards=2");
  ProcessCluster cluster("shardctrler-server", 3, flags);
  ASSERT_NO_FATAL_FAILURE(StartCluster(cluster));
  EXPECT_TRUE(Printed(Ctrl(cluster, {"ctrl", "join", "5=a:1", "6=b:1", "7=c:1"}),
                      "OK (configuration 1)\n"));
  EXPECT_TRUE(Printed(Ctrl(cluster, {"ctrl", "query"}),
                      "num 1\n"
                      "gid 5 shards 0 servers a:1\n"
                      "gid 6 shards 1 servers b:1\n"
                      "gid 7 shards - servers c:1\n"));
  EXPECT_TRUE(Printed(Ctrl(cluster, {"-w", "json", "ctrl", "query"}),
                      "{\"num\":1,\"shards\":[5,6],"
                      "\"groups\":{\"5\":[\"a:1\"],\"6\":[\"b:1\"],\"7\":[\"c:1\"]}}\n"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "move", "2", "5"}), 2, "out of range"));
}

TEST_F(KvctlCtrl, ControllersFromTheEnvironment) {
  ProcessCluster cluster("shardctrler-server", 3, kFlags);
  ASSERT_NO_FATAL_FAILURE(StartCluster(cluster));
  const std::string env = "KVCTL_CONTROLLERS=" + cluster.endpoints_flag();
  EXPECT_TRUE(Printed(Kvctl({"ctrl", "join", "1=h:1"}, {env}), "OK (configuration 1)\n"));
  EXPECT_TRUE(Printed(Kvctl({"ctrl", "query"}, {env}),
                      "num 1\ngid 1 shards 0,1,2,3,4,5,6,7,8,9 servers h:1\n"));
  // The flag wins over the variable (nothing listens on port 1).
  EXPECT_TRUE(Printed(Kvctl({"--controllers=" + cluster.endpoints_flag(), "ctrl", "query", "0"},
                            {"KVCTL_CONTROLLERS=127.0.0.1:1"}),
                      "num 0\ngid 0 shards 0,1,2,3,4,5,6,7,8,9\n"));
  // Neither: bad usage, naming both.
  const Result r = Kvctl({"ctrl", "query"});
  EXPECT_TRUE(Failed(r, 2, "--controllers"));
  EXPECT_TRUE(absl::StrContains(r.err, "KVCTL_CONTROLLERS")) << r;
}

TEST_F(KvctlCtrl, BadUsageAndRefusedRequestsExitTwo) {
  ProcessCluster cluster("shardctrler-server", 3, kFlags);
  ASSERT_NO_FATAL_FAILURE(StartCluster(cluster));
  EXPECT_TRUE(Printed(Ctrl(cluster, {"ctrl", "join", "1=h:1", "2=h:2"}), "OK (configuration 1)\n"));

  // Refused by kvctl itself.
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "move", "x", "y"}), 2, "ctrl move takes SHARD GID"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "move", "1"}), 2, "ctrl move takes SHARD GID"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "join", "0=h:1"}), 2, "bad group '0=h:1'"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "join", "3=nohost"}), 2, "bad endpoint"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "join", "3=h:1", "3=h:2"}), 2, "given twice"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "join"}), 2, "ctrl join takes"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "leave", "x"}), 2, "bad group id 'x'"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "query", "x"}), 2, "ctrl query takes"));
  // After "--": Abseil would take a bare -1 for a flag (and exit 1).
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "query", "--", "-1"}), 2, "ctrl query takes"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "query", "1", "2"}), 2, "ctrl query takes"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "frob"}), 2, "unknown command 'ctrl frob'"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "servers", "1"}), 2, "ctrl servers takes"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "servers", "0", "h:1"}), 2, "ctrl servers takes"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "servers", "1", "nohost"}), 2, "bad endpoint"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl"}), 2, "ctrl takes join, leave, move, servers or query"));

  // Refused by the controller (INVALID_ARGUMENT), nothing changed.
  EXPECT_TRUE(
      Failed(Ctrl(cluster, {"ctrl", "join", "1=h:9"}), 2, "group 1 is already in configuration 1"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "leave", "9"}), 2, "9"));
  EXPECT_TRUE(
      Failed(Ctrl(cluster, {"ctrl", "move", "0", "9"}), 2, "group 9 is not in configuration 1"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "move", "10", "1"}), 2, "out of range"));
  EXPECT_TRUE(Failed(Ctrl(cluster, {"ctrl", "servers", "9", "h:9"}), 2,
                     "group 9 is not in configuration 1"));
  EXPECT_TRUE(
      Printed(Ctrl(cluster, {"ctrl", "query"}),
              "num 1\ngid 1 shards 0,1,2,3,4 servers h:1\ngid 2 shards 5,6,7,8,9 servers h:2\n"));

  // ctrl servers: a new configuration with the same shards; the same list
  // again changes nothing.
  EXPECT_TRUE(
      Printed(Ctrl(cluster, {"ctrl", "servers", "1", "h:3,h:1"}), "OK (configuration 2)\n"));
  EXPECT_TRUE(Printed(Ctrl(cluster, {"-w", "json", "ctrl", "servers", "1", "h:3,h:1"}),
                      "{\"ok\":true,\"num\":2}\n"));
  EXPECT_TRUE(Printed(
      Ctrl(cluster, {"ctrl", "query"}),
      "num 2\ngid 1 shards 0,1,2,3,4 servers h:3,h:1\ngid 2 shards 5,6,7,8,9 servers h:2\n"));
}

TEST_F(KvctlCtrl, NoControllerAnsweringExitsOneAfterTheTimeout) {
  // A reserved port where nothing listens: every connect is refused.
  auto closed = common::ReserveFreePort();
  ASSERT_TRUE(closed.ok()) << closed.status();
  {
    const Result r = Kvctl({"--controllers=" + closed->address(), "--timeout=1s", "ctrl", "query"});
    EXPECT_TRUE(Failed(r, 1, ""));
    EXPECT_LT(r.took, absl::Seconds(20)) << r;
  }
  // Controllers that accept connections but never answer (all paused).
  ProcessCluster cluster("shardctrler-server", 3, kFlags);
  ASSERT_NO_FATAL_FAILURE(StartCluster(cluster));
  for (int i = 0; i < cluster.size(); ++i) cluster.Pause(i);
  const Result r = Ctrl(cluster, {"--timeout=1s", "ctrl", "join", "1=h:1"});
  for (int i = 0; i < cluster.size(); ++i) cluster.Resume(i);
  EXPECT_TRUE(Failed(r, 1, ""));
  EXPECT_GE(r.took, absl::Seconds(1)) << r;
  EXPECT_LT(r.took, absl::Seconds(20)) << r;
}

}  // namespace
}  // namespace ds::ctrl
