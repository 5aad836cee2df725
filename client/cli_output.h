// What kvctl's commands share: exit codes, JSON strings, one result per line.
#pragma once

#include <iostream>
#include <string>

#include "absl/status/status.h"

namespace ds::client::cli {

// 0 on success, 1 when a command failed (timeout, unreachable, server
// error), 2 on invalid usage or input.
enum ExitCode { kOk = 0, kFailed = 1, kUsage = 2 };

// `s` as a JSON string literal, quotes included.
std::string JsonString(const std::string& s);

// One line of output, flushed (scripts read results as they come).
void Print(const std::string& line);
// "kvctl: WHY (see kvctl --help)" on stderr; kUsage.
ExitCode Usage(const std::string& why);
// The error's message on stderr; kUsage for INVALID_ARGUMENT (bad input),
// else kFailed.
ExitCode Fail(const absl::Status& status);

}  // namespace ds::client::cli
