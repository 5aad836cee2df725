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
