// kvctl in sharded mode (--controllers or $KVCTL_CONTROLLERS, no endpoints),
// the real binary against real shardctrler-server and shardkv-server
// processes: get/put/append/del print and exit exactly as in kvraft mode
// (compared with a real kvraft-server cluster, command by command), locate
// (text and -w json, a contract other tools depend on), endpoint status with
// each replica's group, configuration and shards, the environment, and the
// exit statuses (0 ok, 1 failed or nothing answered in --timeout, 2 bad usage
// or input).
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/net.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "shardkv/key_shard.h"
#include "tests/common/kvctl_runner.h"
#include "tests/common/process_cluster.h"

namespace ds::shardkv {
namespace {

using ::ds::testing::ProcessCluster;
using ::ds::testing::ShardedProcessCluster;
using Result = ::ds::testing::KvctlResult;
using ::ds::testing::Failed;
using ::ds::testing::Printed;

// `s` with every loopback address replaced by "HOST:PORT" (error messages
// name the replica that answered; the two modes' replicas differ).
std::string WithoutAddresses(const std::string& s) {
  constexpr absl::string_view kHost = "127.0.0.1:";
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (absl::string_view(s).substr(i, kHost.size()) == kHost) {
      out += "HOST:PORT";
      i += kHost.size();
      while (i < s.size() && absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) ++i;
    } else {
      out += s[i++];
    }
  }
  return out;
}

class ShardKvCli : public ::testing::Test {
 protected:
  // Runs kvctl with `args` (and `env` added to the environment; `stdin_text`
  // on its stdin).
  Result Kvctl(const std::vector<std::string>& args, std::vector<std::string> env = {},
               const std::string& stdin_text = "") {
    return kvctl_.Run(args, std::move(env), stdin_text);
  }

  // kvctl in sharded mode: --controllers for `cluster`'s controller.
  Result Sharded(ShardedProcessCluster& cluster, std::vector<std::string> args,
                 const std::string& stdin_text = "") {
    args.insert(args.begin(), "--controllers=" + cluster.controllers().endpoints_flag());
    return Kvctl(args, {}, stdin_text);
  }

  // The configuration change `args` (kvctl ctrl ...), which must succeed.
  void Ctrl(ShardedProcessCluster& cluster, std::vector<std::string> args,
            const std::string& want) {
    args.insert(args.begin(), "ctrl");
    args.insert(args.begin(), "--timeout=10s");
    ASSERT_TRUE(Printed(Sharded(cluster, args), want));
  }

  ::ds::testing::KvctlRunner kvctl_;
};

void StartSharded(ShardedProcessCluster& cluster) {
  ASSERT_TRUE(cluster.WaitAllHealthy().ok()) << cluster.Logs();
  ASSERT_GE(cluster.controllers().WaitForLeader(), 0) << cluster.Logs();
}

// Configuration 1 after "ctrl join 1=... 2=..." (one command, 10 shards):
// shards 0-4 to group 1, 5-9 to group 2 (the controller's balancing; its own
// tests pin this down).
uint64_t OwnerInConfigurationOne(uint32_t shard) { return shard < 5 ? 1 : 2; }

TEST_F(ShardKvCli, GetPutAppendDelPrintAndExitAsInKvraftMode) {
  ShardedProcessCluster sharded(ShardedProcessCluster::Options::Fast({1, 2}));
  ProcessCluster kvraft("kvraft-server", 3, ::ds::testing::FastRaftFlags());
  ASSERT_NO_FATAL_FAILURE(StartSharded(sharded));
  ASSERT_TRUE(kvraft.WaitAllHealthy().ok());
  ASSERT_NO_FATAL_FAILURE(
      Ctrl(sharded, {"join", sharded.JoinArg(1), sharded.JoinArg(2)}, "OK (configuration 1)\n"));

  // The keys fall into both groups.
  const std::vector<std::string> keys = {"k", "greeting", "x", "y", "z"};
  std::set<uint64_t> gids;
  for (const std::string& k : keys) gids.insert(OwnerInConfigurationOne(KeyToShard(k, 10)));
  ASSERT_EQ(gids.size(), 2u) << "pick keys of both groups";

  struct Step {
    std::vector<std::string> args;
    std::string stdin_text;
    int code;
    std::string out;  // "*": not compared with a fixed text (the modes still must agree)
  };
  const std::vector<Step> steps = {
      {{"put", "k", "hello"}, "", 0, "OK\n"},
      {{"append", "k", " world"}, "", 0, "OK\n"},
      {{"get", "k"}, "", 0, "hello world\n"},
      {{"-w", "json", "get", "k"},
       "",
       0,
       "{\"key\":\"k\",\"found\":true,\"value\":\"hello world\"}\n"},
      {{"del", "k"}, "", 0, "1\n"},
      {{"del", "k"}, "", 0, "0\n"},
      {{"get", "k"}, "", 0, "\n"},
      {{"-w", "json", "get", "k"}, "", 0, "{\"key\":\"k\",\"found\":false,\"value\":\"\"}\n"},
      {{"append", "greeting", "hi"}, "", 0, "OK\n"},
      {{"append", "greeting", "\"there\""}, "", 0, "OK\n"},
      {{"-w", "json", "get", "greeting"},
       "",
       0,
       "{\"key\":\"greeting\",\"found\":true,\"value\":\"hi\\\"there\\\"\"}\n"},
      {{"-w", "json", "put", "x", "1"}, "", 0, "{\"ok\":true}\n"},
      {{"-w", "json", "append", "y", "2"}, "", 0, "{\"ok\":true}\n"},
      {{"-w", "json", "del", "x"}, "", 0, "{\"deleted\":1}\n"},
      {{"-w", "json", "del", "z"}, "", 0, "{\"deleted\":0}\n"},
      {{"get", "y"}, "", 0, "2\n"},
      // One command per line from stdin, one result line per command; the
      // bad line is a usage error, the others still run.
      {{},
       "put z value with spaces\nappend z !\nget z\n\nget missing\nbogus\ndel z\nget y\n",
       2,
       "OK\nOK\nvalue with spaces!\n\nERROR\n1\n2\n"},
      {{"-"}, "get greeting\n", 0, "hi\"there\"\n"},
      // Bad usage and bad input.
      {{"put", "onlykey"}, "", 2, ""},
      {{"get"}, "", 2, ""},
      {{"del", "a", "b"}, "", 2, ""},
      {{"frob", "k"}, "", 2, ""},
      {{"put", "", "v"}, "", 2, ""},
      {{"-w", "yaml", "get", "k"}, "", 2, ""},
  };
  for (const Step& step : steps) {
    std::vector<std::string> args = {"--timeout=10s"};
    args.insert(args.end(), step.args.begin(), step.args.end());
    const Result s = Sharded(sharded, args, step.stdin_text);
    args.insert(args.begin(), "--endpoints=" + kvraft.endpoints_flag());
    const Result k = Kvctl(args, {}, step.stdin_text);
    EXPECT_EQ(s.code, step.code) << s;
    EXPECT_EQ(s.out, step.out) << s;
    if (step.code == 0) {
      EXPECT_EQ(s.err, "") << s;
    } else {
      EXPECT_TRUE(absl::StartsWith(s.err, "kvctl: ")) << s;
    }
    // Exactly as in kvraft mode (error messages up to the replica they name).
    EXPECT_EQ(s.code, k.code) << s << "\n" << k;
    EXPECT_EQ(s.out, k.out) << s << "\n" << k;
    EXPECT_EQ(WithoutAddresses(s.err), WithoutAddresses(k.err)) << s << "\n" << k;
  }
}

TEST_F(ShardKvCli, LocateTextAndJson) {
  ShardedProcessCluster cluster(ShardedProcessCluster::Options::Fast({1, 2}));
  ASSERT_NO_FATAL_FAILURE(StartSharded(cluster));
  const std::string key = "user:42";
  const uint32_t shard = KeyToShard(key, 10);

  // No group yet: the shard, unassigned.
  EXPECT_TRUE(
      Printed(Sharded(cluster, {"locate", key}),
              absl::StrCat("key ", key, " shard ", shard, " gid 0 servers - (configuration 0)\n")));
  EXPECT_TRUE(Printed(
      Sharded(cluster, {"-w", "json", "locate", key}),
      absl::StrCat("{\"key\":\"", key, "\",\"shard\":", shard, ",\"gid\":0,\"servers\":[]}\n")));

  ASSERT_NO_FATAL_FAILURE(
      Ctrl(cluster, {"join", cluster.JoinArg(1), cluster.JoinArg(2)}, "OK (configuration 1)\n"));
  const auto servers_json = [&](uint64_t gid) {
    std::vector<std::string> quoted;
    for (const std::string& e : cluster.group(gid).endpoints()) quoted.push_back("\"" + e + "\"");
    return absl::StrCat("[", absl::StrJoin(quoted, ","), "]");
  };
  const uint64_t owner = OwnerInConfigurationOne(shard);
  EXPECT_TRUE(Printed(Sharded(cluster, {"locate", key}),
                      absl::StrCat("key ", key, " shard ", shard, " gid ", owner, " servers ",
                                   cluster.group(owner).endpoints_flag(), " (configuration 1)\n")));
  EXPECT_TRUE(Printed(Sharded(cluster, {"-w", "json", "locate", key}),
                      absl::StrCat("{\"key\":\"", key, "\",\"shard\":", shard, ",\"gid\":", owner,
                                   ",\"servers\":", servers_json(owner), "}\n")));
  // Every shard: keys k0, k1, ... until each shard has one.
  std::map<uint32_t, std::string> key_of_shard;
  for (int i = 0; key_of_shard.size() < 10; ++i) {
    const std::string k = absl::StrCat("k", i);
    key_of_shard.emplace(KeyToShard(k, 10), k);
  }
  for (const auto& [s, k] : key_of_shard) {
    const uint64_t g = OwnerInConfigurationOne(s);
    EXPECT_TRUE(Printed(Sharded(cluster, {"-w", "json", "locate", k}),
                        absl::StrCat("{\"key\":\"", k, "\",\"shard\":", s, ",\"gid\":", g,
                                     ",\"servers\":", servers_json(g), "}\n")));
  }
  // JSON escapes the key; text prints it as it is.
  const std::string quoted = "a\"b";
  const uint32_t quoted_shard = KeyToShard(quoted, 10);
  const uint64_t quoted_owner = OwnerInConfigurationOne(quoted_shard);
  EXPECT_TRUE(Printed(
      Sharded(cluster, {"-w", "json", "locate", quoted}),
      absl::StrCat("{\"key\":\"a\\\"b\",\"shard\":", quoted_shard, ",\"gid\":", quoted_owner,
                   ",\"servers\":", servers_json(quoted_owner), "}\n")));

  // The shard moves: locate follows (it reads the latest configuration), and
  // the value moved with it.
  ASSERT_TRUE(Printed(Sharded(cluster, {"--timeout=10s", "put", key, "v"}), "OK\n"));
  const uint64_t other = owner == 1 ? 2 : 1;
  ASSERT_NO_FATAL_FAILURE(
      Ctrl(cluster, {"move", absl::StrCat(shard), absl::StrCat(other)}, "OK (configuration 2)\n"));
  EXPECT_TRUE(Printed(Sharded(cluster, {"locate", key}),
                      absl::StrCat("key ", key, " shard ", shard, " gid ", other, " servers ",
                                   cluster.group(other).endpoints_flag(), " (configuration 2)\n")));
  EXPECT_TRUE(Printed(Sharded(cluster, {"--timeout=10s", "get", key}), "v\n"));

  // After every group left, the shard is unassigned again.
  ASSERT_NO_FATAL_FAILURE(Ctrl(cluster, {"leave", "1", "2"}, "OK (configuration 3)\n"));
  EXPECT_TRUE(Printed(
      Sharded(cluster, {"-w", "json", "locate", key}),
      absl::StrCat("{\"key\":\"", key, "\",\"shard\":", shard, ",\"gid\":0,\"servers\":[]}\n")));
}

TEST_F(ShardKvCli, ControllersFromTheEnvironment) {
  ShardedProcessCluster cluster(ShardedProcessCluster::Options::Fast({1}));
  ASSERT_NO_FATAL_FAILURE(StartSharded(cluster));
  const std::string env = "KVCTL_CONTROLLERS=" + cluster.controllers().endpoints_flag();
  EXPECT_TRUE(
      Printed(Kvctl({"ctrl", "join", cluster.JoinArg(1)}, {env}), "OK (configuration 1)\n"));
  EXPECT_TRUE(Printed(Kvctl({"--timeout=10s", "put", "k", "from-env"}, {env}), "OK\n"));
  EXPECT_TRUE(Printed(Kvctl({"get", "k"}, {env}), "from-env\n"));
  EXPECT_TRUE(Printed(Kvctl({"locate", "k"}, {env}),
                      absl::StrCat("key k shard ", KeyToShard("k", 10), " gid 1 servers ",
                                   cluster.group(1).endpoints_flag(), " (configuration 1)\n")));

  // The flag wins over the variable (nothing listens at the variable's port).
  auto closed = common::ReserveFreePort();
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_TRUE(Printed(Kvctl({"--controllers=" + cluster.controllers().endpoints_flag(), "get", "k"},
                            {"KVCTL_CONTROLLERS=" + closed->address()}),
                      "from-env\n"));
  // Endpoints, as a flag or in the environment, choose kvraft mode (here:
  // nobody answers there), and locate is then bad usage.
  EXPECT_TRUE(Failed(Kvctl({"--endpoints=" + closed->address(), "--timeout=1s", "get", "k"}, {env}),
                     1, ""));
  EXPECT_TRUE(Failed(
      Kvctl({"--timeout=1s", "get", "k"}, {env, "KVCTL_ENDPOINTS=" + closed->address()}), 1, ""));
  EXPECT_TRUE(Failed(Kvctl({"locate", "k"}, {env, "KVCTL_ENDPOINTS=" + closed->address()}), 2,
                     "locate needs --controllers"));
  // Neither: bad usage, naming both.
  const Result neither = Kvctl({"get", "k"});
  EXPECT_TRUE(Failed(neither, 2, "--endpoints"));
  EXPECT_TRUE(absl::StrContains(neither.err, "--controllers")) << neither;
}

// Each replica's line of `endpoint status` (text) for a group that owns
// `owned` (shard -> keys) in configuration `num`.
std::string StatusSuffix(uint64_t gid, uint64_t num, const std::map<uint32_t, int>& owned) {
  std::vector<std::string> shards;
  for (const auto& [s, keys] : owned)
    shards.push_back(absl::StrCat(s, ":serving(", keys, " keys)"));
  return absl::StrCat(" gid=", gid, " config=", num, " shards=", absl::StrJoin(shards, ","));
}

TEST_F(ShardKvCli, EndpointStatusShowsEveryReplicaWithItsGroupAndShards) {
  ShardedProcessCluster cluster(ShardedProcessCluster::Options::Fast({1, 2}));
  ASSERT_NO_FATAL_FAILURE(StartSharded(cluster));
  // Before any join there is no group to show.
  EXPECT_TRUE(Failed(Sharded(cluster, {"endpoint", "status"}), 1, "no group has joined yet"));

  ASSERT_NO_FATAL_FAILURE(
      Ctrl(cluster, {"join", cluster.JoinArg(1), cluster.JoinArg(2)}, "OK (configuration 1)\n"));
  std::map<uint64_t, std::map<uint32_t, int>> owned;  // gid -> shard -> keys
  for (uint32_t s = 0; s < 10; ++s) owned[OwnerInConfigurationOne(s)][s] = 0;
  for (int i = 0; i < 12; ++i) {
    const std::string k = absl::StrCat("key", i);
    ASSERT_TRUE(Printed(Sharded(cluster, {"--timeout=10s", "put", k, "v"}), "OK\n"));
    const uint32_t s = KeyToShard(k, 10);
    owned[OwnerInConfigurationOne(s)][s]++;
  }

  // Every replica of both groups, in the configuration's order; followers
  // may still be applying the last puts, so look until they have.
  Result r;
  bool matched = false;
  for (int attempt = 0; attempt < 50 && !matched; ++attempt) {
    if (attempt > 0) absl::SleepFor(absl::Milliseconds(200));
    r = Sharded(cluster, {"endpoint", "status"});
    const std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
    matched = r.code == 0 && r.err.empty() && lines.size() == 6;
    size_t n = 0;
    for (uint64_t gid : {1, 2}) {
      for (int i = 0; i < 3 && matched; ++i, ++n) {
        const std::string& line = lines[n];
        matched = absl::StartsWith(line, cluster.group(gid).endpoints()[i] +
                                             absl::StrCat(" id=", i + 1, " role=")) &&
                  absl::EndsWith(line, StatusSuffix(gid, 1, owned[gid]));
      }
    }
  }
  EXPECT_TRUE(matched) << "want 6 lines ending in\n"
                       << StatusSuffix(1, 1, owned[1]) << "\n"
                       << StatusSuffix(2, 1, owned[2]) << "\ngot " << r;

  // JSON: every shard with its owner and state, the keys held here.
  r = Sharded(cluster, {"-w", "json", "endpoint", "status"});
  ASSERT_EQ(r.code, 0) << r;
  std::vector<std::string> shards;
  for (uint32_t s = 0; s < 10; ++s) {
    const uint64_t owner = OwnerInConfigurationOne(s);
    shards.push_back(absl::StrCat("{\"shard\":", s, ",\"owner\":", owner, ",\"state\":\"",
                                  owner == 1 ? "serving" : "not-owned",
                                  "\",\"config_num\":1,\"keys\":", owner == 1 ? owned[1][s] : 0,
                                  "}"));
  }
  const std::string group1 =
      absl::StrCat(",\"gid\":1,\"config_num\":1,\"shards\":[", absl::StrJoin(shards, ","), "]}");
  EXPECT_TRUE(absl::StartsWith(r.out, "[{\"endpoint\":\"" + cluster.group(1).endpoints()[0])) << r;
  EXPECT_TRUE(absl::StrContains(r.out, group1)) << "want " << group1 << "\ngot " << r;
  EXPECT_TRUE(absl::StrContains(r.out, "\"gid\":2,\"config_num\":1,")) << r;

  // A replica down: its error on stderr, the others still shown, exit 1.
  cluster.group(2).Kill(1);
  r = Sharded(cluster, {"--timeout=2s", "endpoint", "status"});
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_TRUE(absl::StartsWith(r.err, "kvctl: ")) << r;
  EXPECT_EQ(std::vector<std::string>(absl::StrSplit(r.out, '\n', absl::SkipEmpty())).size(), 5u)
      << r;
  EXPECT_FALSE(absl::StrContains(r.out, cluster.group(2).endpoints()[1])) << r;
}

TEST_F(ShardKvCli, NothingAnsweringExitsOneAfterTheTimeout) {
  // Controllers at a reserved port where nothing listens.
  auto closed = common::ReserveFreePort();
  ASSERT_TRUE(closed.ok()) << closed.status();
  for (const std::vector<std::string>& cmd :
       std::vector<std::vector<std::string>>{{"get", "k"}, {"put", "k", "v"}, {"locate", "k"}}) {
    std::vector<std::string> args = {"--controllers=" + closed->address(), "--timeout=1s"};
    args.insert(args.end(), cmd.begin(), cmd.end());
    const Result r = Kvctl(args);
    EXPECT_TRUE(Failed(r, 1, ""));
    EXPECT_LT(r.took, absl::Seconds(20)) << r;
  }

  ShardedProcessCluster cluster(ShardedProcessCluster::Options::Fast({1}));
  ASSERT_NO_FATAL_FAILURE(StartSharded(cluster));
  // No group has joined: no configuration serves the key.
  {
    const Result r = Sharded(cluster, {"--timeout=1s", "get", "k"});
    EXPECT_TRUE(Failed(r, 1, "")) << r;
    EXPECT_GE(r.took, absl::Seconds(1)) << r;
    EXPECT_LT(r.took, absl::Seconds(20)) << r;
  }
  ASSERT_NO_FATAL_FAILURE(Ctrl(cluster, {"join", cluster.JoinArg(1)}, "OK (configuration 1)\n"));
  ASSERT_TRUE(Printed(Sharded(cluster, {"--timeout=10s", "put", "k", "v"}), "OK\n"));

  // The group accepts connections but never answers (every replica paused).
  ProcessCluster& group = cluster.group(1);
  for (int i = 0; i < group.size(); ++i) group.Pause(i);
  for (const std::vector<std::string>& cmd :
       std::vector<std::vector<std::string>>{{"get", "k"}, {"append", "k", "w"}}) {
    std::vector<std::string> args = {"--timeout=1s"};
    args.insert(args.end(), cmd.begin(), cmd.end());
    const Result r = Sharded(cluster, args);
    EXPECT_TRUE(Failed(r, 1, "")) << r;
    EXPECT_GE(r.took, absl::Seconds(1)) << r;
    EXPECT_LT(r.took, absl::Seconds(20)) << r;
  }
  for (int i = 0; i < group.size(); ++i) group.Resume(i);

  // The controller never answers (every replica paused): the configuration
  // cannot be read.
  ProcessCluster& ctrl = cluster.controllers();
  for (int i = 0; i < ctrl.size(); ++i) ctrl.Pause(i);
  const Result r = Sharded(cluster, {"--timeout=1s", "get", "k"});
  for (int i = 0; i < ctrl.size(); ++i) ctrl.Resume(i);
  EXPECT_TRUE(Failed(r, 1, "")) << r;
  EXPECT_LT(r.took, absl::Seconds(20)) << r;

  // Everything answers again; the paused append may or may not have happened.
  const Result after = Sharded(cluster, {"--timeout=10s", "get", "k"});
  EXPECT_TRUE(after.out == "v\n" || after.out == "vw\n") << after;
  EXPECT_EQ(after.code, 0) << after;
}

TEST_F(ShardKvCli, BadUsageExitsTwo) {
  auto closed = common::ReserveFreePort();
  ASSERT_TRUE(closed.ok()) << closed.status();
  const std::string controllers = "--controllers=" + closed->address();
  // Refused by kvctl itself, before any request.
  EXPECT_TRUE(Failed(Kvctl({"--endpoints=" + closed->address(), "locate", "k"}), 2,
                     "locate needs --controllers"));
  EXPECT_TRUE(Failed(Kvctl({controllers, "locate"}), 2, "locate takes KEY"));
  EXPECT_TRUE(Failed(Kvctl({controllers, "locate", "a", "b"}), 2, "locate takes KEY"));
  EXPECT_TRUE(Failed(Kvctl({controllers, "put", "onlykey"}), 2, "put takes KEY VALUE"));
  EXPECT_TRUE(Failed(Kvctl({controllers, "get"}), 2, "get takes KEY"));
  EXPECT_TRUE(Failed(Kvctl({controllers, "frob"}), 2, "unknown command 'frob'"));
  EXPECT_TRUE(Failed(Kvctl({"--controllers=nohost", "get", "k"}), 2, "--controllers"));
  EXPECT_TRUE(Failed(Kvctl({"locate", "k"}), 2, "--controllers"));
  EXPECT_TRUE(Failed(Kvctl({controllers, "--timeout=0s", "get", "k"}), 2, "--timeout"));
}

}  // namespace
}  // namespace ds::shardkv
