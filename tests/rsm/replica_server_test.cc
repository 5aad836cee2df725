// ReplicaServer's start-up checks: the data directory records its format and
// service, and a directory of another service or of an older build is refused
// instead of being misread.
#include "raft/service/replica_server.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "common/files.h"
#include "common/net.h"
#include "gtest/gtest.h"
#include "tests/rsm/null_app.h"

namespace ds::rsm {
namespace {

using testing::NullApp;

class ReplicaServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/replica_server.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    auto port = common::ReserveFreePort();
    ASSERT_TRUE(port.ok()) << port.status();
    port_ = std::make_unique<common::PortReservation>(std::move(*port));
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  ReplicaServerOptions Options(const std::string& service) {
    ReplicaServerOptions o;
    o.program = "test";
    o.id = 1;
    o.peers = {{1, port_->address()}};
    o.data_dir = dir_ + "/data";
    o.service.name = service;
    o.tick_interval = absl::Milliseconds(10);
    o.shutdown_deadline = absl::ZeroDuration();
    return o;
  }

  std::string dir_;
  std::unique_ptr<common::PortReservation> port_;
  NullApp app_;
};

TEST_F(ReplicaServerTest, FreshDirectoryRecordsItsFormatAndRestartsFromIt) {
  {
    auto s = ReplicaServer::Start(Options("kvraft"), &app_);
    ASSERT_TRUE(s.ok()) << s.status();
  }
  auto text = common::ReadWholeFile(dir_ + "/data/FORMAT");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_NE(text->find("service kvraft"), std::string::npos) << *text;
  auto again = ReplicaServer::Start(Options("kvraft"), &app_);
  EXPECT_TRUE(again.ok()) << again.status();
}

TEST_F(ReplicaServerTest, DirectoryOfAnotherServiceIsRefused) {
  {
    auto s = ReplicaServer::Start(Options("kvraft"), &app_);
    ASSERT_TRUE(s.ok()) << s.status();
  }
  auto other = ReplicaServer::Start(Options("shardctrler"), &app_);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(other.status().message().find("shardctrler"), std::string::npos)
      << other.status().message();
}

TEST_F(ReplicaServerTest, FixedParameterChangedAtRestartIsRefusedNamingBothValues) {
  ReplicaServerOptions o = Options("shardctrler");
  o.fixed_parameters = {{"shards", "10"}};
  {
    auto s = ReplicaServer::Start(o, &app_);
    ASSERT_TRUE(s.ok()) << s.status();
  }
  o.fixed_parameters = {{"shards", "12"}};
  auto again = ReplicaServer::Start(o, &app_);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(again.status().message().find("shards 10"), std::string::npos)
      << again.status().message();
  EXPECT_NE(again.status().message().find("shards 12"), std::string::npos)
      << again.status().message();
  o.fixed_parameters = {{"shards", "10"}};
  auto same = ReplicaServer::Start(o, &app_);
  EXPECT_TRUE(same.ok()) << same.status();
}

TEST_F(ReplicaServerTest, RaftStateWithoutAFormatFileIsAnOlderBuildAndRefused) {
  std::filesystem::create_directories(dir_ + "/data/raft");
  auto s = ReplicaServer::Start(Options("kvraft"), &app_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("older"), std::string::npos) << s.status().message();
  // Nothing was written: the directory is left as it was found.
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/data/FORMAT"));
}

}  // namespace
}  // namespace ds::rsm
