// Small files written so that a crash leaves either the old or the new
// contents, never a torn or missing file: write to a temporary name beside
// the target, fsync it, rename it over the target, fsync the directory.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ds::common {

absl::Status WriteFileDurably(const std::string& path, std::string_view contents);

// The whole file; kNotFound if it does not exist.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

}  // namespace ds::common
