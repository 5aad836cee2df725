#include "common/subprocess.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/files.h"
#include "common/net.h"
#include "gtest/gtest.h"

namespace ds::common {
namespace {

// A file's contents, "" if it cannot be read (logs and outputs in messages).
std::string ReadLog(const std::string& path) { return common::ReadWholeFile(path).value_or(""); }

// Each test's logs live in a directory of its own, removed when the test ends.
class SubprocessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/subprocess_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string TempLog(const std::string& name) const { return dir_ + "/" + name + ".log"; }

 private:
  std::string dir_;
};

std::unique_ptr<Subprocess> StartHealthServer(const PortReservation& port, const std::string& log) {
  auto p = Subprocess::Start(
      {.argv = {BinaryPath("test-health-server"), "--listen=" + port.address()}, .log_path = log});
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : nullptr;
}

TEST_F(SubprocessTest, StartsWaitsHealthyAndShutsDownGracefullyOnSigterm) {
  auto port = ReserveFreePort();
  ASSERT_TRUE(port.ok());
  std::string log = TempLog("graceful");
  auto p = StartHealthServer(*port, log);
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(p->WaitHealthy(port->address(), absl::Seconds(20)).ok());
  EXPECT_EQ(p->Terminate(absl::Seconds(10)), 0);
  EXPECT_NE(ReadLog(log).find("stopped"), std::string::npos) << ReadLog(log);
}

TEST_F(SubprocessTest, PausedProcessIsNotHealthyUntilContinued) {
  auto port = ReserveFreePort();
  ASSERT_TRUE(port.ok());
  auto p = StartHealthServer(*port, TempLog("pause"));
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(p->WaitHealthy(port->address(), absl::Seconds(20)).ok());
  p->Stop();
  EXPECT_EQ(p->WaitHealthy(port->address(), absl::Milliseconds(600)).code(),
            absl::StatusCode::kDeadlineExceeded);
  p->Continue();
  EXPECT_TRUE(p->WaitHealthy(port->address(), absl::Seconds(20)).ok());
}

TEST_F(SubprocessTest, KillReapsAndReportsSignal) {
  auto port = ReserveFreePort();
  ASSERT_TRUE(port.ok());
  auto p = StartHealthServer(*port, TempLog("kill"));
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(p->WaitHealthy(port->address(), absl::Seconds(20)).ok());
  EXPECT_EQ(p->Kill(), 128 + SIGKILL);
  EXPECT_FALSE(p->running());
  EXPECT_EQ(kill(p->pid(), 0), -1) << "child was not reaped";
}

TEST_F(SubprocessTest, WaitHealthyFailsFastWhenChildExits) {
  auto port = ReserveFreePort();
  ASSERT_TRUE(port.ok());
  auto p = Subprocess::Start({.argv = {BinaryPath("test-health-server"), "--no_such_flag"},
                              .log_path = TempLog("badflag")});
  ASSERT_TRUE(p.ok());
  absl::Time start = absl::Now();
  absl::Status st = (*p)->WaitHealthy(port->address(), absl::Seconds(30));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_NE((*p)->TryWait().value_or(0), 0);
}

TEST_F(SubprocessTest, MissingBinaryIsAnError) {
  auto p = Subprocess::Start({.argv = {"/nonexistent/binary"}});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SubprocessTest, HelpListsProjectFlagsAndExitsZero) {
  std::string log = TempLog("help");
  auto p =
      Subprocess::Start({.argv = {BinaryPath("test-health-server"), "--help"}, .log_path = log});
  ASSERT_TRUE(p.ok());
  auto status = (*p)->WaitFor(absl::Seconds(20));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, 0);
  std::string out = ReadLog(log);
  EXPECT_NE(out.find("--listen"), std::string::npos) << out;
  EXPECT_NE(out.find("--shutdown_deadline"), std::string::npos) << out;
  EXPECT_NE(out.find("--log_level"), std::string::npos) << out;
}

}  // namespace
}  // namespace ds::common
