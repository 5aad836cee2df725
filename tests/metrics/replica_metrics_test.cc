// ReplicaServer with metrics_listen (--metrics-listen), in process: the bound
// port is retrievable in code, and two replicas in one process keep their
// metrics apart (one registry each); without it nothing is served.
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "common/net.h"
#include "gtest/gtest.h"
#include "raft/service/replica_server.h"
#include "tests/metrics/scrape.h"
#include "tests/rsm/null_app.h"

namespace ds::rsm {
namespace {

using ::ds::testing::MetricsText;
using ::ds::testing::Scrape;

using testing::NullApp;

class ReplicaMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/replica_metrics.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // A one-replica group (it elects itself) on a free port.
  std::unique_ptr<ReplicaServer> StartReplica(const std::string& name,
                                              const std::string& metrics_listen) {
    auto port = common::ReserveFreePort();
    EXPECT_TRUE(port.ok()) << port.status();
    ReplicaServerOptions o;
    o.program = "test";
    o.id = 1;
    o.peers = {{1, port->address()}};
    o.data_dir = dir_ + "/" + name;
    o.service.name = "kvraft";
    o.tick_interval = absl::Milliseconds(10);
    o.shutdown_deadline = absl::ZeroDuration();
    o.metrics_listen = metrics_listen;
    ports_.push_back(std::move(*port));
    auto s = ReplicaServer::Start(std::move(o), &app_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  // Proposes a sessionless command once the replica leads.
  static void Write(ReplicaServer& s) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline) {
      auto r = s.rsm().Submit(EncodeCommand(nullptr, "x", absl::ToUnixMicros(absl::Now())),
                              absl::Seconds(1));
      if (r.ok()) return;
      absl::SleepFor(absl::Milliseconds(20));
    }
    ADD_FAILURE() << "no write went through";
  }

  std::string dir_;
  std::vector<common::PortReservation> ports_;
  NullApp app_;
};

TEST_F(ReplicaMetricsTest, TwoReplicasInOneProcessServeTheirOwnMetrics) {
  auto a = StartReplica("a", "127.0.0.1:0");
  auto b = StartReplica("b", "127.0.0.1:0");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->Serve().ok());
  ASSERT_TRUE(b->Serve().ok());
  ASSERT_GT(a->metrics_port(), 0);
  ASSERT_GT(b->metrics_port(), 0);
  ASSERT_NE(a->metrics_port(), b->metrics_port());
  for (int i = 0; i < 3; ++i) Write(*a);

  auto ma = Scrape(absl::StrCat("127.0.0.1:", a->metrics_port()));
  auto mb = Scrape(absl::StrCat("127.0.0.1:", b->metrics_port()));
  ASSERT_TRUE(ma.ok()) << ma.status();
  ASSERT_TRUE(mb.ok()) << mb.status();
  EXPECT_GE(ma->Sum("dstack_raft_proposals_total"), 3);
  EXPECT_EQ(mb->Sum("dstack_raft_proposals_total"), 0);
  EXPECT_GE(ma->Sum("dstack_raft_applied_entries_total"), 3);
  EXPECT_EQ(ma->Sum("dstack_raft_role", {{"role", "leader"}}), 1);
}

TEST_F(ReplicaMetricsTest, OffByDefault) {
  auto s = StartReplica("off", "");
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->Serve().ok());
  EXPECT_EQ(s->metrics_port(), 0);
}

TEST_F(ReplicaMetricsTest, BusyMetricsPortFailsServe) {
  auto a = StartReplica("a", "127.0.0.1:0");
  ASSERT_TRUE(a && a->Serve().ok());
  auto b = StartReplica("b", absl::StrCat("127.0.0.1:", a->metrics_port()));
  ASSERT_TRUE(b);
  absl::Status st = b->Serve();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
}

TEST_F(ReplicaMetricsTest, ShutdownIsNotSlowedByTheEndpoint) {
  auto a = StartReplica("a", "127.0.0.1:0");
  ASSERT_TRUE(a && a->Serve().ok());
  const absl::Time start = absl::Now();
  a->Shutdown();
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
}

}  // namespace
}  // namespace ds::rsm
