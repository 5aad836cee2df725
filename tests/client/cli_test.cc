// kvctl and kvbench, the real binaries, against the fake cluster.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/subprocess.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/rsm.grpc.pb.h"
#include "tests/client/fake_kv_service.h"
#include "tests/client/unreachable_endpoint.h"
#include "tests/common/kvctl_runner.h"

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

// kvctl member: bad arguments are usage errors (exit 2, the reason on
// stderr) found before anything is sent; an unreachable group is a failure
// (exit 1) within --timeout. What the commands print against real servers is
// tested in tests/kvraft/membership_process_test.cc.
TEST_F(CliTest, MemberUsageErrors) {
  const std::string ep = DeadEndpointsFlag();
  struct Case {
    std::vector<std::string> args;
    std::string why;
  };
  const std::vector<Case> cases = {
      {{"member"}, "member takes list, add, promote or remove"},
      {{"member", "frob"}, "unknown command 'member frob'"},
      {{"member", "list", "extra"}, "member list takes no arguments"},
      {{"member", "add"}, "member add takes ID=HOST:PORT [--learner]"},
      {{"member", "add", "4=127.0.0.1:7001", "5=127.0.0.1:7002"}, "member add takes"},
      {{"member", "add", "4"}, "bad member '4': want ID=HOST:PORT"},
      {{"member", "add", "0=127.0.0.1:7001"}, "bad member id '0'"},
      {{"member", "add", "x=127.0.0.1:7001"}, "bad member id 'x'"},
      {{"member", "add", "4=nohost"}, "bad member address 'nohost'"},
      {{"member", "add", "4=127.0.0.1:0"}, "bad member address"},
      {{"member", "add", "4=127.0.0.1:7001,127.0.0.1:7002"}, "want one HOST:PORT"},
      {{"member", "promote"}, "member promote takes ID"},
      {{"member", "promote", "four"}, "bad member id 'four'"},
      {{"member", "remove", "0"}, "bad member id '0'"},
      {{"member", "remove", "1", "2"}, "member remove takes ID"},
      {{"member", "promote", "4", "--learner"}, "--learner goes with member add only"},
      {{"--learner", "get", "k"}, "--learner goes with member add only"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {ep, "--timeout=300ms"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    Result r = Kvctl(args);
    EXPECT_EQ(r.exit_code, 2) << absl::StrJoin(c.args, " ") << ": " << r.output;
    EXPECT_NE(r.output.find(c.why), std::string::npos)
        << absl::StrJoin(c.args, " ") << ": " << r.output;
  }
  Result no_endpoints = Kvctl({"member", "list"});
  EXPECT_EQ(no_endpoints.exit_code, 2);
  EXPECT_NE(no_endpoints.output.find("--endpoints"), std::string::npos) << no_endpoints.output;

  // Well-formed, but nobody answers: exit 1 once --timeout has passed.
  for (std::vector<std::string> args :
       {std::vector<std::string>{"member", "list"},
        std::vector<std::string>{"member", "add", "4=127.0.0.1:7001", "--learner"},
        std::vector<std::string>{"member", "remove", "4"}}) {
    args.insert(args.begin(), {ep, "--timeout=500ms"});
    Result r = Kvctl(args);
    EXPECT_EQ(r.exit_code, 1) << absl::StrJoin(args, " ") << ": " << r.output;
    EXPECT_NE(r.output.find("kvctl: member "), std::string::npos) << r.output;
    EXPECT_LT(r.took, absl::Seconds(10)) << absl::StrJoin(args, " ");
  }

  Result help = Kvctl({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* line : {"member list", "member add ID=HOST:PORT [--learner]",
                           "member promote ID", "member remove ID", "--learner"}) {
    EXPECT_NE(help.output.find(line), std::string::npos) << line << " not in --help";
  }
}

// A replica group of one that serves the Replica service's membership calls
// from a member table, without Raft: what kvctl prints, and how it copes with
// a change that was applied although its answer was lost.
class FakeMembership final : public rsm::pb::Replica::Service {
 public:
  FakeMembership() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    // Deliberately not by id: kvctl prints members sorted.
    AddMember(2, "127.0.0.1:7002", false);
    AddMember(1, "127.0.0.1:7001", false);
  }
  ~FakeMembership() override { server_->Shutdown(); }

  std::string endpoint() const { return absl::StrCat("127.0.0.1:", port_); }
  // The next change is made but answered UNAVAILABLE without ds-not-applied,
  // as by a leader that lost leadership after proposing it.
  void LoseNextReply() {
    absl::MutexLock lock(&mu_);
    lose_next_ = true;
  }
  void AddMember(uint64_t id, const std::string& address, bool learner) {
    absl::MutexLock lock(&mu_);
    rsm::pb::Member& m = members_[id];
    m.set_id(id);
    m.set_address(address);
    m.set_learner(learner);
  }

  grpc::Status Status(grpc::ServerContext*, const rsm::pb::StatusRequest*,
                      rsm::pb::StatusResponse* resp) override {
    resp->set_id(1);
    resp->set_role(rsm::pb::ROLE_LEADER);
    resp->set_term(1);
    resp->set_leader_id(1);
    return grpc::Status::OK;
  }
  grpc::Status MemberList(grpc::ServerContext*, const rsm::pb::MemberListRequest*,
                          rsm::pb::MemberListResponse* resp) override {
    absl::MutexLock lock(&mu_);
    resp->mutable_header()->set_member_id(1);
    resp->set_leader_id(1);
    resp->set_conf_committed(true);
    for (auto it = members_.rbegin(); it != members_.rend(); ++it) {
      *resp->add_members() = it->second;
    }
    return grpc::Status::OK;
  }
  grpc::Status MemberAdd(grpc::ServerContext*, const rsm::pb::MemberAddRequest* req,
                         rsm::pb::MemberChangeResponse* resp) override {
    absl::MutexLock lock(&mu_);
    if (req->address() == "refused.example:1") {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "address is not HOST:PORT");
    }
    if (members_.contains(req->id())) {
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                          absl::StrCat("member ", req->id(), " already exists"));
    }
    rsm::pb::Member& m = members_[req->id()];
    m.set_id(req->id());
    m.set_address(req->address());
    m.set_learner(req->learner());
    return Answer(resp);
  }
  grpc::Status MemberPromote(grpc::ServerContext*, const rsm::pb::MemberPromoteRequest* req,
                             rsm::pb::MemberChangeResponse* resp) override {
    absl::MutexLock lock(&mu_);
    auto it = members_.find(req->id());
    if (it == members_.end() || !it->second.learner()) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("learner ", req->id(), " is not caught up yet"));
    }
    it->second.set_learner(false);
    return Answer(resp);
  }
  grpc::Status MemberRemove(grpc::ServerContext*, const rsm::pb::MemberRemoveRequest* req,
                            rsm::pb::MemberChangeResponse* resp) override {
    absl::MutexLock lock(&mu_);
    if (members_.erase(req->id()) == 0) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("member ", req->id(), " is not in the configuration"));
    }
    return Answer(resp);
  }

 private:
  grpc::Status Answer(rsm::pb::MemberChangeResponse* resp) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (lose_next_) {
      lose_next_ = false;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "leadership lost");
    }
    resp->mutable_header()->set_member_id(1);
    for (const auto& [id, m] : members_) *resp->add_members() = m;
    return grpc::Status::OK;
  }

  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  std::map<uint64_t, rsm::pb::Member> members_ ABSL_GUARDED_BY(mu_);
  bool lose_next_ ABSL_GUARDED_BY(mu_) = false;
};

TEST(KvctlMember, PrintsTheConfigurationAsTextAndJson) {
  FakeMembership fake;
  fake.AddMember(3, "127.0.0.1:7003", true);
  ds::testing::KvctlRunner kvctl;
  const std::string ep = "--endpoints=" + fake.endpoint();
  EXPECT_TRUE(ds::testing::Printed(
      kvctl.Run({ep, "member", "list"}),
      "1 127.0.0.1:7001 voter\n2 127.0.0.1:7002 voter\n3 127.0.0.1:7003 learner\n"));
  EXPECT_TRUE(
      ds::testing::Printed(kvctl.Run({ep, "-w", "json", "member", "list"}),
                           "[{\"id\":1,\"address\":\"127.0.0.1:7001\",\"role\":\"voter\"},"
                           "{\"id\":2,\"address\":\"127.0.0.1:7002\",\"role\":\"voter\"},"
                           "{\"id\":3,\"address\":\"127.0.0.1:7003\",\"role\":\"learner\"}]\n"));
  EXPECT_TRUE(ds::testing::Printed(
      kvctl.Run({ep, "member", "promote", "3"}),
      "member 3 promoted to voter\n1 127.0.0.1:7001 voter\n2 127.0.0.1:7002 voter\n"
      "3 127.0.0.1:7003 voter\n"));
  EXPECT_TRUE(
      ds::testing::Printed(kvctl.Run({ep, "-w", "json", "member", "remove", "2"}),
                           "[{\"id\":1,\"address\":\"127.0.0.1:7001\",\"role\":\"voter\"},"
                           "{\"id\":3,\"address\":\"127.0.0.1:7003\",\"role\":\"voter\"}]\n"));
  // Stdin mode: flags of a line are the line's.
  EXPECT_TRUE(ds::testing::Printed(
      kvctl.Run({ep}, {}, "member add 4=127.0.0.1:7004 --learner\n"),
      "member 4 added as learner\n1 127.0.0.1:7001 voter\n3 127.0.0.1:7003 voter\n"
      "4 127.0.0.1:7004 learner\n"));
}

// The servers' refusals: exit 1 with their reason (2 for bad input).
TEST(KvctlMember, RefusalsEndTheCommand) {
  FakeMembership fake;
  ds::testing::KvctlRunner kvctl;
  const std::string ep = "--endpoints=" + fake.endpoint();
  EXPECT_TRUE(ds::testing::Failed(kvctl.Run({ep, "member", "add", "2=127.0.0.1:7002"}), 1,
                                  "member 2 already exists"));
  EXPECT_TRUE(ds::testing::Failed(kvctl.Run({ep, "member", "remove", "9"}), 1,
                                  "member 9 is not in the configuration"));
  EXPECT_TRUE(
      ds::testing::Failed(kvctl.Run({ep, "member", "promote", "2"}), 1, "is not caught up yet"));
  EXPECT_TRUE(ds::testing::Failed(kvctl.Run({ep, "member", "add", "5=refused.example:1"}), 2,
                                  "address is not HOST:PORT"));
}

// A change whose answer was lost may have been made: its retry is refused
// (ALREADY_EXISTS, NOT_FOUND), and kvctl then finds the change made in the
// leader's member list and reports success.
TEST(KvctlMember, AChangeWhoseAnswerWasLostIsNotReportedAsFailed) {
  FakeMembership fake;
  ds::testing::KvctlRunner kvctl;
  const std::string ep = "--endpoints=" + fake.endpoint();
  fake.LoseNextReply();
  EXPECT_TRUE(ds::testing::Printed(
      kvctl.Run({ep, "--timeout=10s", "member", "add", "4=127.0.0.1:7004", "--learner"}),
      "member 4 added as learner\n1 127.0.0.1:7001 voter\n2 127.0.0.1:7002 voter\n"
      "4 127.0.0.1:7004 learner\n"));
  fake.LoseNextReply();
  EXPECT_TRUE(
      ds::testing::Printed(kvctl.Run({ep, "--timeout=10s", "member", "remove", "2"}),
                           "member 2 removed\n1 127.0.0.1:7001 voter\n4 127.0.0.1:7004 learner\n"));
  // Without a lost answer, a refusal stands even if the list shows the state
  // asked for: the member was there before.
  EXPECT_TRUE(ds::testing::Failed(
      kvctl.Run({ep, "--timeout=10s", "member", "add", "4=127.0.0.1:7004", "--learner"}), 1,
      "member 4 already exists"));
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
