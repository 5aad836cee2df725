// TLS and the separate peer port, with real kvraft-server and kvctl processes
// and certificates made by the openssl command at test time: mutual TLS on
// the client port (a client without a certificate is refused), Raft calls on a
// shared port only with a peer certificate (a client's certificate forging
// Raft traffic is refused), a replica whose certificate the peers' CA did not
// sign cannot join, and --listen-peer keeps Raft off the client port; kvbench,
// the sharded service (groups reaching the controller and each other with peer
// certificates) and MapReduce (coordinator, worker, mrrun) over mutual TLS.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/net.h"
#include "common/subprocess.h"
#include "common/tls.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/raft.grpc.pb.h"
#include "proto/shardkv.grpc.pb.h"
#include "tests/common/kvctl_runner.h"

namespace ds::kv {
namespace {

using testing::KvctlResult;
using testing::Printed;

const std::vector<std::string> kFastRaft = {"--tick-interval=50ms", "--election-ticks=10"};

// Runs a shell command; true on exit status 0.
bool Sh(const std::string& cmd) { return std::system(cmd.c_str()) == 0; }

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string tmpl = ::testing::TempDir() + "/tls_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = new std::string(tmpl);
    const std::string d = *dir_;
    std::ofstream(d + "/ext.cnf") << "subjectAltName=IP:127.0.0.1\n"
                                     "basicConstraints=CA:FALSE\n"
                                     "extendedKeyUsage=serverAuth,clientAuth\n";
    const std::string quiet = " >/dev/null 2>&1";
    for (const char* ca : {"client-ca", "peer-ca", "rogue-ca"}) {
      ASSERT_TRUE(Sh(absl::StrCat("cd ", d,
                                  " && openssl req -x509 -newkey ec -pkeyopt "
                                  "ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=",
                                  ca, " -keyout ", ca, ".key -out ", ca, ".pem", quiet)))
          << "openssl is needed (scripts/setup.sh installs it)";
    }
    // server: the client port's certificate; client: kvctl's; peer: every
    // replica's (one is enough); rogue: a "peer" the peers' CA did not sign.
    for (auto [name, ca] : {std::pair{"server", "client-ca"}, std::pair{"client", "client-ca"},
                            std::pair{"peer", "peer-ca"}, std::pair{"rogue", "rogue-ca"}}) {
      ASSERT_TRUE(Sh(absl::StrCat(
          "cd ", d, " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ",
          "-subj /CN=", name, " -keyout ", name, ".key -out ", name, ".csr", quiet,
          " && openssl x509 -req -in ", name, ".csr -CA ", ca, ".pem -CAkey ", ca,
          ".key -CAcreateserial -days 2 -extfile ext.cnf -out ", name, ".pem", quiet)));
    }
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }

  void SetUp() override {
    name_ = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (int i = 0; i < 6; ++i) {
      auto p = common::ReserveFreePort();
      ASSERT_TRUE(p.ok());
      ports_.push_back(std::move(*p));
    }
  }

  static std::string File(const std::string& name) { return *dir_ + "/" + name; }
  std::string Port(int i) const { return ports_[i].address(); }
  std::string Peers(int first_port) const {
    return absl::StrCat("1=", Port(first_port), ",2=", Port(first_port + 1),
                        ",3=", Port(first_port + 2));
  }
  // Flags of the shared-port mutual-TLS cluster (ports 0-2).
  static std::vector<std::string> MutualTls(const std::string& peer = "peer") {
    return {"--tls-cert=" + File("server.pem"),      "--tls-key=" + File("server.key"),
            "--tls-ca=" + File("client-ca.pem"),     "--peer-tls-cert=" + File(peer + ".pem"),
            "--peer-tls-key=" + File(peer + ".key"), "--peer-tls-ca=" + File("peer-ca.pem")};
  }
  std::vector<std::string> ClientTls() const {
    return {"--tls-cert=" + File("client.pem"), "--tls-key=" + File("client.key"),
            "--tls-ca=" + File("client-ca.pem")};
  }

  void StartReplica(int i, std::vector<std::string> flags) {
    std::vector<std::string> argv = {common::BinaryPath("kvraft-server"),
                                     absl::StrCat("--id=", i + 1),
                                     absl::StrCat("--data-dir=", *dir_, "/", name_, "-", i)};
    argv.insert(argv.end(), kFastRaft.begin(), kFastRaft.end());
    argv.insert(argv.end(), flags.begin(), flags.end());
    auto p = common::Subprocess::Start({.argv = argv, .log_path = LogPath(i)});
    ASSERT_TRUE(p.ok()) << p.status();
    procs_.push_back(std::move(*p));
  }
  std::string LogPath(int i) const { return absl::StrCat(*dir_, "/", name_, "-", i, ".log"); }
  std::string Log(int i) const { return common::ReadWholeFile(LogPath(i)).value_or(""); }

  KvctlResult Kvctl(const std::vector<std::string>& args) { return kvctl_.Run(args); }
  // Waits until kvctl (with `flags`) finds every endpoint healthy.
  bool WaitHealthy(const std::vector<std::string>& flags, const std::string& endpoints) {
    std::vector<std::string> args = flags;
    args.push_back("--endpoints=" + endpoints);
    args.push_back("--timeout=1s");
    args.push_back("endpoint");
    args.push_back("health");
    for (absl::Time deadline = absl::Now() + absl::Seconds(30); absl::Now() < deadline;) {
      if (Kvctl(args).code == 0) return true;
      absl::SleepFor(absl::Milliseconds(200));
    }
    return false;
  }

  static std::string* dir_;
  testing::KvctlRunner kvctl_;
  std::string name_;
  std::vector<common::PortReservation> ports_;
  std::vector<std::unique_ptr<common::Subprocess>> procs_;
};

std::string* TlsTest::dir_ = nullptr;

TEST_F(TlsTest, MutualTlsOnASharedPort) {
  for (int i = 0; i < 3; ++i) {
    std::vector<std::string> flags = MutualTls();
    flags.push_back("--peers=" + Peers(0));
    StartReplica(i, flags);
  }
  const std::string endpoints = absl::StrCat(Port(0), ",", Port(1), ",", Port(2));
  ASSERT_TRUE(WaitHealthy(ClientTls(), endpoints)) << Log(0);
  std::vector<std::string> ok = ClientTls();
  ok.push_back("--endpoints=" + endpoints);
  auto with = [](std::vector<std::string> a, std::vector<std::string> b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  EXPECT_TRUE(Printed(Kvctl(with(ok, {"put", "k", "v"})), "OK\n"));
  EXPECT_TRUE(Printed(Kvctl(with(ok, {"get", "k"})), "v\n"));

  // No client certificate, a certificate of the wrong CA, or plaintext.
  const std::string ep = "--endpoints=" + endpoints;
  KvctlResult no_cert =
      Kvctl({"--tls-ca=" + File("client-ca.pem"), ep, "--timeout=2s", "get", "k"});
  EXPECT_EQ(no_cert.code, 1) << no_cert;
  KvctlResult rogue = Kvctl({"--tls-cert=" + File("rogue.pem"), "--tls-key=" + File("rogue.key"),
                             "--tls-ca=" + File("client-ca.pem"), ep, "--timeout=2s", "get", "k"});
  EXPECT_EQ(rogue.code, 1) << rogue;
  KvctlResult plain = Kvctl({ep, "--timeout=2s", "get", "k"});
  EXPECT_EQ(plain.code, 1) << plain;
  EXPECT_EQ(Kvctl({"--tls-cert=" + File("client.pem"), ep, "get", "k"}).code, 2)
      << "--tls-cert without --tls-key is a usage error";

  // kvbench too: TLS with the client certificate, no errors.
  std::vector<std::string> bench = {
      common::BinaryPath("kvbench"), ep, "--clients=4", "--duration=1s", "-w", "json"};
  for (const std::string& f : ClientTls()) bench.push_back(f);
  auto kvbench = common::Subprocess::Start({.argv = bench, .log_path = *dir_ + "/kvbench.log"});
  ASSERT_TRUE(kvbench.ok());
  EXPECT_EQ((*kvbench)->WaitFor(absl::Seconds(60)), 0);
  const std::string bench_out = common::ReadWholeFile(*dir_ + "/kvbench.log").value_or("");
  EXPECT_NE(bench_out.find("\"errors\":0"), std::string::npos) << bench_out;

  // A client's certificate (valid on this port) cannot speak Raft.
  auto creds = common::MakeChannelCredentials(
      {File("client.pem"), File("client.key"), File("client-ca.pem")}, "--tls");
  ASSERT_TRUE(creds.ok());
  auto stub = raft::pb::RaftService::NewStub(grpc::CreateChannel(Port(0), *creds));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  raft::pb::SendAck ack;
  auto writer = stub->InstallSnapshot(&ctx, &ack);
  raft::pb::SnapshotChunk chunk;
  chunk.set_done(true);
  writer->Write(chunk);
  writer->WritesDone();
  grpc::Status st = writer->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_NE(Log(0).find("refused peer call"), std::string::npos) << Log(0);
  // ... while the replicas' own Raft traffic flows: the write above committed.
}

TEST_F(TlsTest, AReplicaWithoutAPeerCertificateCannotJoin) {
  for (int i = 0; i < 3; ++i) {
    std::vector<std::string> flags = MutualTls(i == 2 ? "rogue" : "peer");
    flags.push_back("--peers=" + Peers(0));
    StartReplica(i, flags);
  }
  const std::string good = absl::StrCat(Port(0), ",", Port(1));
  ASSERT_TRUE(WaitHealthy(ClientTls(), good)) << Log(0);
  std::vector<std::string> args = ClientTls();
  args.push_back("--endpoints=" + good);
  args.insert(args.end(), {"put", "k", "v"});
  EXPECT_TRUE(Printed(Kvctl(args), "OK\n"));
  // Replica 3 never gets the log: its status shows nothing applied.
  absl::SleepFor(absl::Seconds(2));
  std::vector<std::string> status = ClientTls();
  status.insert(status.end(), {"--endpoints=" + Port(2), "-w", "json", "endpoint", "status"});
  KvctlResult r = Kvctl(status);
  EXPECT_NE(r.out.find("\"applied_index\":0"), std::string::npos) << r << Log(2);
  // Nor can it become leader: the two others do not grant it votes.
  EXPECT_EQ(r.out.find("\"role\":\"leader\""), std::string::npos) << r;
  // The refusal is in the logs (gRPC's TLS handshake error).
  EXPECT_NE((Log(0) + Log(1)).find("Handshake failed"), std::string::npos) << Log(0);
}

TEST_F(TlsTest, SeparatePeerPortKeepsRaftOffTheClientPort) {
  // Ports 0-2: Raft (mutual TLS with the peers' CA); 3-5: clients, plaintext.
  const std::string clients = absl::StrCat("1=", Port(3), ",2=", Port(4), ",3=", Port(5));
  for (int i = 0; i < 3; ++i) {
    StartReplica(i, {"--peers=" + Peers(0), "--client-endpoints=" + clients,
                     "--listen-peer=" + Port(i), "--peer-tls-cert=" + File("peer.pem"),
                     "--peer-tls-key=" + File("peer.key"), "--peer-tls-ca=" + File("peer-ca.pem")});
  }
  const std::string endpoints = absl::StrCat(Port(3), ",", Port(4), ",", Port(5));
  ASSERT_TRUE(WaitHealthy({}, endpoints)) << Log(0);
  EXPECT_TRUE(Printed(Kvctl({"--endpoints=" + endpoints, "put", "k", "v"}), "OK\n"));
  EXPECT_TRUE(Printed(Kvctl({"--endpoints=" + endpoints, "get", "k"}), "v\n"));
  // The client port does not serve Raft at all.
  auto stub = raft::pb::RaftService::NewStub(
      grpc::CreateChannel(Port(3), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  raft::pb::SendAck ack;
  auto writer = stub->InstallSnapshot(&ctx, &ack);
  writer->WritesDone();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::UNIMPLEMENTED);
  // Leader hints name client ports: a client that knows only a follower's
  // client port finds the leader (status lists client addresses).
  KvctlResult st = Kvctl({"--endpoints=" + endpoints, "endpoint", "status"});
  EXPECT_EQ(st.code, 0) << st;
  // Bad combinations are refused at start with a message naming the flag.
  auto p = common::Subprocess::Start(
      {.argv = {common::BinaryPath("kvraft-server"), "--id=1", "--peers=" + Peers(0),
                "--data-dir=" + *dir_ + "/bad", "--listen-peer=" + Port(0)},
       .log_path = *dir_ + "/bad.log"});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)->WaitFor(absl::Seconds(10)), 2);
  EXPECT_NE(common::ReadWholeFile(*dir_ + "/bad.log")->find("--client-endpoints"),
            std::string::npos);
}

// The sharded service over mutual TLS: a controller and two groups of one
// replica; the groups reach the controller and each other (shard migration)
// with their peer certificates, clients with theirs.
TEST_F(TlsTest, ShardsMoveBetweenGroupsOverMutualTls) {
  auto start = [&](const std::string& binary, std::vector<std::string> flags, int i) {
    std::vector<std::string> argv = {common::BinaryPath(binary), "--id=1",
                                     absl::StrCat("--data-dir=", *dir_, "/", name_, "-", i)};
    argv.insert(argv.end(), kFastRaft.begin(), kFastRaft.end());
    argv.insert(argv.end(), flags.begin(), flags.end());
    const std::vector<std::string> tls = MutualTls();
    argv.insert(argv.end(), tls.begin(), tls.end());
    auto p = common::Subprocess::Start({.argv = argv, .log_path = LogPath(i)});
    ASSERT_TRUE(p.ok()) << p.status();
    procs_.push_back(std::move(*p));
  };
  start("shardctrler-server", {"--peers=1=" + Port(0)}, 0);
  for (int g = 1; g <= 2; ++g) {
    start("shardkv-server",
          {absl::StrCat("--gid=", g * 100), "--peers=1=" + Port(g), "--controllers=" + Port(0)}, g);
  }
  ASSERT_TRUE(WaitHealthy(ClientTls(), absl::StrCat(Port(0), ",", Port(1), ",", Port(2))))
      << Log(0) << Log(1);
  auto kvctl = [&](std::vector<std::string> args) {
    std::vector<std::string> all = ClientTls();
    all.push_back("--controllers=" + Port(0));
    all.push_back("--timeout=20s");
    all.insert(all.end(), args.begin(), args.end());
    return Kvctl(all);
  };
  ASSERT_EQ(kvctl({"ctrl", "join", "100=" + Port(1)}).code, 0) << Log(0);
  for (int k = 0; k < 20; ++k) {
    ASSERT_TRUE(Printed(kvctl({"put", absl::StrCat("key", k), absl::StrCat("v", k)}), "OK\n"))
        << Log(1);
  }
  // Group 200 joins: about half of the shards move from 100 to 200.
  ASSERT_EQ(kvctl({"ctrl", "join", "200=" + Port(2)}).code, 0);
  for (int k = 0; k < 20; ++k) {
    EXPECT_TRUE(Printed(kvctl({"get", absl::StrCat("key", k)}), absl::StrCat("v", k, "\n")))
        << Log(2);
  }
  KvctlResult owners = kvctl({"ctrl", "query"});
  EXPECT_NE(owners.out.find("200"), std::string::npos) << owners;
  EXPECT_EQ((Log(1) + Log(2)).find("refused peer call"), std::string::npos) << Log(1) << Log(2);
  // A client's certificate cannot pull or delete a shard: migration needs a
  // peer's.
  auto creds = common::MakeChannelCredentials(
      {File("client.pem"), File("client.key"), File("client-ca.pem")}, "--tls");
  ASSERT_TRUE(creds.ok());
  auto stub = shardkv::pb::ShardMigration::NewStub(grpc::CreateChannel(Port(1), *creds));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  shardkv::pb::DeleteShardResponse resp;
  grpc::Status st = stub->DeleteShard(&ctx, shardkv::pb::DeleteShardRequest(), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_NE(Log(1).find("refused peer call"), std::string::npos) << Log(1);
}

// MapReduce over mutual TLS: a worker started before the coordinator (as
// systemd or compose may start them) connects once it is up, mrrun with a
// client certificate runs a job, and mrrun without one is refused.
TEST_F(TlsTest, MapReduceOverMutualTls) {
  const std::string d = *dir_ + "/" + name_;
  std::filesystem::create_directories(d + "/in");
  std::ofstream(d + "/in/a.txt") << "the fox and the dog\n";
  std::ofstream(d + "/in/b.txt") << "The dog\n";
  const std::vector<std::string> client = ClientTls();
  auto start = [&](std::vector<std::string> argv, const std::string& log) {
    argv.insert(argv.end(), client.begin(), client.end());
    auto p = common::Subprocess::Start({.argv = argv, .log_path = d + "/" + log});
    EXPECT_TRUE(p.ok()) << p.status();
    if (p.ok()) procs_.push_back(std::move(*p));
  };
  start({common::BinaryPath("mr-worker"), "--coordinator=" + Port(0), "--work-dir=" + d + "/w"},
        "worker.log");
  absl::SleepFor(absl::Seconds(1));
  // The coordinator's client port: server certificate, clients' CA.
  auto coordinator = common::Subprocess::Start(
      {.argv = {common::BinaryPath("mr-coordinator"), "--listen=" + Port(0),
                "--data-dir=" + d + "/coordinator", "--tls-cert=" + File("server.pem"),
                "--tls-key=" + File("server.key"), "--tls-ca=" + File("client-ca.pem")},
       .log_path = d + "/coordinator.log"});
  ASSERT_TRUE(coordinator.ok());
  procs_.push_back(std::move(*coordinator));
  // Up once `mrrun list` (with the client certificate) answers.
  bool up = false;
  for (absl::Time deadline = absl::Now() + absl::Seconds(30); !up && absl::Now() < deadline;) {
    start({common::BinaryPath("mrrun"), "--coordinator=" + Port(0), "list"}, "list.log");
    up = procs_.back()->WaitFor(absl::Seconds(30)) == 0;
    if (!up) absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(up) << common::ReadWholeFile(d + "/coordinator.log").value_or("");
  start({common::BinaryPath("mrrun"), "--coordinator=" + Port(0), "--app=wc",
         "--output=" + d + "/out", d + "/in/a.txt", d + "/in/b.txt"},
        "mrrun.log");
  std::optional<int> code = procs_.back()->WaitFor(absl::Seconds(60));
  const std::string mrrun_log = common::ReadWholeFile(d + "/mrrun.log").value_or("");
  ASSERT_EQ(code, 0) << mrrun_log << common::ReadWholeFile(d + "/worker.log").value_or("");
  std::string out;
  for (int r = 0; r < 10; ++r) {
    out += common::ReadWholeFile(absl::StrCat(d, "/out/mr-out-", r)).value_or("");
  }
  EXPECT_NE(out.find("dog 2"), std::string::npos) << out;
  // Without a client certificate the coordinator refuses the connection.
  auto refused =
      common::Subprocess::Start({.argv = {common::BinaryPath("mrrun"), "--coordinator=" + Port(0),
                                          "--tls-ca=" + File("client-ca.pem"), "list"},
                                 .log_path = d + "/refused.log"});
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ((*refused)->WaitFor(absl::Seconds(60)), 1)
      << common::ReadWholeFile(d + "/refused.log").value_or("");
}

}  // namespace
}  // namespace ds::kv
