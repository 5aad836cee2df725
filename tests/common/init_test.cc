#include "common/init.h"

#include "gtest/gtest.h"

namespace ds::common {
namespace {

TEST(ParseLogLevel, AcceptsKnownNamesOnly) {
  spdlog::level::level_enum l;
  EXPECT_TRUE(ParseLogLevel("debug", &l));
  EXPECT_EQ(l, spdlog::level::debug);
  EXPECT_TRUE(ParseLogLevel("error", &l));
  EXPECT_EQ(l, spdlog::level::err);
  EXPECT_FALSE(ParseLogLevel("loud", &l));
  EXPECT_FALSE(ParseLogLevel("", &l));
}

TEST(MakeLogger, IndependentLoggersPerComponent) {
  auto a = MakeLogger("raft-1");
  auto b = MakeLogger("raft-1");
  EXPECT_NE(a.get(), b.get());
  EXPECT_EQ(a->name(), "raft-1");
}

}  // namespace
}  // namespace ds::common
