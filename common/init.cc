#include "common/init.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, log_level, "info",
          "Log level: trace, debug, info, warn, error, critical or off.");

namespace ds::common {
namespace {

// --help lists every flag defined in this project's sources; --helpfull adds
// Abseil's own. Abseil's default shows only flags from the file with main().
bool IsProjectFlagFile(absl::string_view file) { return !absl::StrContains(file, "absl/"); }

// --help / -h: the usage paragraph and every project flag on stdout, exit 0.
// (Abseil's own --help handler exits 1.)
[[noreturn]] void PrintHelpAndExit(std::string_view usage) {
  std::cout << usage
            << "\n\nFlags (--name-with-dashes and --name_with_underscores are the same):\n";
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (IsProjectFlagFile(flag->Filename())) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(), [](auto* a, auto* b) { return a->Name() < b->Name(); });
  for (const auto* flag : flags) absl::flags_internal::FlagHelp(std::cout, *flag);
  std::cout << "\n--flagfile=PATH reads flags from PATH, one --name=value per line (# comments);\n"
               "flags after it on the command line override them.\n"
               "Abseil's own flags (--fromenv, ...): --helpfull\n";
  std::cout.flush();
  std::exit(0);
}

// Abseil's parser exits with status 1 on an unknown flag or a bad value; our
// tools promise 2 for invalid usage. So check names and values first, with
// the same rules (--name=value, --name value, --bool, --nobool).
void CheckFlagsOrExit(const std::vector<std::string>& args) {
  const std::string program = args.empty() ? "program" : args[0].substr(args[0].rfind('/') + 1);
  auto fail = [&program](const std::string& why) {
    std::fprintf(stderr, "%s: %s (see %s --help)\n", program.c_str(), why.c_str(), program.c_str());
    std::exit(2);
  };
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") break;
    if (a.size() < 2 || a[0] != '-') continue;
    const size_t start = a[1] == '-' ? 2 : 1;
    const size_t eq = a.find('=');
    std::string name = a.substr(start, eq == std::string::npos ? std::string::npos : eq - start);
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    bool negated = false;
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      flag = absl::FindCommandLineFlag(name.substr(2));
      negated = flag != nullptr && flag->IsOfType<bool>();
      if (!negated) flag = nullptr;
    }
    if (flag == nullptr) fail("unknown flag " + a.substr(0, eq));
    if (negated || (flag->IsOfType<bool>() && eq == std::string::npos)) continue;
    std::string value;
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      fail("missing value for flag --" + name);
    }
    // Parsing into the flag here is harmless: Abseil's parser sets it again.
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      fail("bad value '" + value + "' for flag --" + name + ": " + error);
    }
  }
}

// --flagfile=PATH (or --flagfile PATH) is replaced, where it stands, by the
// flags in PATH: one per line, "#" comments and blank lines skipped, names
// with dashes or underscores like on the command line (Abseil's own flagfile
// handling accepts only underscores, and exits 1). Flags after it on the
// command line override the file's. Files may include files, 8 deep.
void ExpandFlagFiles(const std::string& program, std::vector<std::string>* args, int depth = 0) {
  auto fail = [&program](const std::string& why) {
    std::fprintf(stderr, "%s: %s\n", program.c_str(), why.c_str());
    std::exit(2);
  };
  std::vector<std::string> out;
  for (size_t i = 0; i < args->size(); ++i) {
    const std::string& a = (*args)[i];
    std::string path;
    if (a == "--") {
      out.insert(out.end(), args->begin() + i, args->end());
      break;
    }
    if (a == "--flagfile" || a == "-flagfile") {
      if (i + 1 == args->size()) fail("missing value for flag --flagfile");
      path = (*args)[++i];
    } else if (absl::StartsWith(a, "--flagfile=") || absl::StartsWith(a, "-flagfile=")) {
      path = a.substr(a.find('=') + 1);
    } else {
      out.push_back(a);
      continue;
    }
    if (depth >= 8) fail("--flagfile nested more than 8 deep at " + path);
    std::ifstream in(path);
    if (!in) fail("cannot read --flagfile " + path + ": " + std::strerror(errno));
    std::vector<std::string> lines;
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
      absl::string_view t = absl::StripAsciiWhitespace(line);
      if (t.empty() || t[0] == '#') continue;
      if (t[0] != '-') {
        fail(absl::StrCat("--flagfile ", path, ":", number, ": not a flag: ", t,
                          " (want one --name=value per line)"));
      }
      lines.emplace_back(t);
    }
    ExpandFlagFiles(program, &lines, depth + 1);
    out.insert(out.end(), lines.begin(), lines.end());
  }
  *args = std::move(out);
}

}  // namespace

bool ParseLogLevel(std::string_view name, spdlog::level::level_enum* level) {
  static constexpr std::pair<std::string_view, spdlog::level::level_enum> kLevels[] = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},
      {"info", spdlog::level::info},   {"warn", spdlog::level::warn},
      {"error", spdlog::level::err},   {"critical", spdlog::level::critical},
      {"off", spdlog::level::off}};
  for (const auto& [n, l] : kLevels) {
    if (n == name) {
      *level = l;
      return true;
    }
  }
  return false;
}

std::vector<std::string> InitProcess(int argc, char** argv, std::string_view usage) {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = IsProjectFlagFile;
  config.contains_helpshort_flags = IsProjectFlagFile;
  config.normalize_filename = [](absl::string_view f) { return std::string(f); };
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(absl::string_view(usage.data(), usage.size()));
  // Flag names may be spelled with dashes (--data-dir) as well as underscores
  // (--data_dir, Abseil's spelling): rewrite the name part of each flag.
  std::vector<std::string> args(argv + 1, argv + argc);
  const std::string program = std::string(argv[0]).substr(std::string(argv[0]).rfind('/') + 1);
  ExpandFlagFiles(program, &args);
  args.insert(args.begin(), argv[0]);
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& a = args[i];
    if (a == "--") break;
    if (a == "--help" || a == "-help" || a == "-h") PrintHelpAndExit(usage);
    if (a.size() > 2 && a[0] == '-') {
      size_t start = a[1] == '-' ? 2 : 1;
      size_t end = std::min(a.find('='), a.size());
      for (size_t j = start; j < end; ++j) {
        if (a[j] == '-') a[j] = '_';
      }
    }
  }
  CheckFlagsOrExit(args);
  std::vector<char*> argv2;
  for (auto& a : args) argv2.push_back(a.data());
  argv2.push_back(nullptr);
  std::vector<char*> rest =
      absl::ParseCommandLine(static_cast<int>(argv2.size()) - 1, argv2.data());
  spdlog::level::level_enum level;
  if (!ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level)) {
    std::fprintf(
        stderr,
        "%s: bad --log_level '%s' (want trace, debug, info, warn, error, critical or off)\n",
        argv[0], absl::GetFlag(FLAGS_log_level).c_str());
    std::exit(2);
  }
  spdlog::set_level(level);
#ifdef NDEBUG
  // Debian builds Abseil without NDEBUG, which leaves absl::Mutex's deadlock
  // detector on: every lock goes through a process-wide lock-order graph (a
  // third of the CPU of a busy kvraft-server). Debug and sanitizer builds keep
  // it, so tests still catch lock-order inversions.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  std::vector<std::string> out;
  for (size_t i = 1; i < rest.size(); ++i) out.emplace_back(rest[i]);
  return out;
}

std::shared_ptr<spdlog::logger> MakeLogger(std::string_view component) {
  // Logs go to stderr so that command-line tools keep stdout for results.
  static auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>(std::string(component), sink);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ [%n] %v");
  logger->set_level(spdlog::get_level());
  logger->flush_on(spdlog::level::warn);
  return logger;
}

}  // namespace ds::common
