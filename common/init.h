// Process start-up shared by every binary: Abseil flags with a truthful --help,
// and spdlog logging configured from --log_level.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "spdlog/logger.h"

namespace ds::common {

// Parses the command line. `usage` is the one-paragraph description printed by
// --help, followed by every flag the binary defines (our flags, not Abseil's
// internal ones). --flagfile=PATH stands for the flags in PATH (one per line,
// dashes allowed, "#" comments). Returns the positional arguments, argv[0] excluded. Exits with
// status 1 (Abseil's) and a message on an unknown flag or a bad value (2 for a bad --log-level),
// status 0 on --help.
std::vector<std::string> InitProcess(int argc, char** argv, std::string_view usage);

// A logger that prefixes each line with `component`, at the level given by
// --log_level. Each call makes a new logger; nothing is registered globally, so
// many components (and many instances of one) can live in a process.
std::shared_ptr<spdlog::logger> MakeLogger(std::string_view component);

// Parses "trace|debug|info|warn|error|critical|off".
bool ParseLogLevel(std::string_view name, spdlog::level::level_enum* level);

}  // namespace ds::common
