// Conversions between absl::Status (inside modules) and grpc::Status (on the wire).
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace ds::common {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace ds::common
