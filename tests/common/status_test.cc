#include "common/status.h"

#include "gtest/gtest.h"

namespace ds::common {
namespace {

TEST(Status, RoundTripsCodeAndMessage) {
  absl::Status in = absl::UnavailableError("not leader; leader=2");
  grpc::Status wire = ToGrpcStatus(in);
  EXPECT_EQ(wire.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(wire.error_message(), "not leader; leader=2");
  EXPECT_EQ(FromGrpcStatus(wire), in);
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "x")).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ds::common
