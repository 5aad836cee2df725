// Small files written so that a crash leaves either the old or the new
// contents, never a torn or missing file: write to a temporary name beside
// the target, fsync it, rename it over the target, fsync the directory.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ds::common {

absl::Status WriteFileDurably(const std::string& path, std::string_view contents);

// The whole file; kNotFound if it does not exist.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// fsync of a file or a directory (after creating, renaming or removing
// entries in it).
absl::Status SyncPath(const std::string& path);

// Copies `from` to `to` (created or truncated) and fsyncs the copy.
absl::Status CopyFileDurably(const std::string& from, const std::string& to);

// Removes `path` and everything under it; OK if it does not exist.
absl::Status RemoveTree(const std::string& path);

// The size of a file, kNotFound if it does not exist.
absl::StatusOr<uint64_t> FileSize(const std::string& path);

}  // namespace ds::common
