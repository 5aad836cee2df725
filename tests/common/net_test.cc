#include "common/net.h"

#include <set>

#include "gtest/gtest.h"

namespace ds::common {
namespace {

TEST(ReserveFreePort, ReservationsAreDistinctWhileHeld) {
  std::vector<PortReservation> held;
  std::set<int> ports;
  for (int i = 0; i < 50; ++i) {
    auto r = ReserveFreePort();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_GE(r->port(), 20000);
    EXPECT_LT(r->port(), 32768);
    EXPECT_TRUE(ports.insert(r->port()).second) << "port handed out twice: " << r->port();
    held.push_back(std::move(*r));
  }
}

TEST(ReserveFreePort, AddressIsLoopback) {
  auto r = ReserveFreePort();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->address(), "127.0.0.1:" + std::to_string(r->port()));
}

}  // namespace
}  // namespace ds::common

namespace ds::common {
namespace {

TEST(ParsePeerList, ParsesIdsAndAddresses) {
  auto peers = ParsePeerList("1=127.0.0.1:2001, 2=localhost:2002,3=h:3");
  ASSERT_TRUE(peers.ok()) << peers.status();
  EXPECT_EQ(peers->size(), 3u);
  EXPECT_EQ(peers->at(2), "localhost:2002");
}

TEST(ParsePeerList, RejectsMalformedEntries) {
  for (const char* bad : {"", "1=h", "0=h:1", "x=h:1", "1=h:1,1=h:2", "1=:5", "1=h:99999", "h:1"}) {
    EXPECT_EQ(ParsePeerList(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace ds::common
