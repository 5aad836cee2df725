// Runs the real kvctl binary the way a user's shell does and keeps what it
// did (exit status, stdout and stderr apart, how long it took), with the two
// assertions the CLI tests make on it: Printed (exit 0, exactly this on
// stdout, nothing on stderr) and Failed (this exit status, a "kvctl: " error
// on stderr, nothing on stdout). Shared by the controller's and the sharded
// KV's kvctl tests.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"

namespace ds::testing {

struct KvctlResult {
  std::string command;  // kvctl's arguments
  int code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
  absl::Duration took;
};

inline std::ostream& operator<<(std::ostream& os, const KvctlResult& r) {
  return os << "kvctl " << r.command << ": exit " << r.code << " after "
            << absl::FormatDuration(r.took) << "\nstdout:\n"
            << r.out << "stderr:\n"
            << r.err;
}

// Exit 0, exactly `want` on stdout, nothing on stderr.
inline ::testing::AssertionResult Printed(const KvctlResult& r, const std::string& want) {
  if (r.code == 0 && r.out == want && r.err.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "want exit 0 and stdout:\n" << want << "got " << r;
}

// Exit `code`, nothing on stdout, and on stderr a "kvctl: " error that
// contains `why`.
inline ::testing::AssertionResult Failed(const KvctlResult& r, int code, const std::string& why) {
  if (r.code == code && r.out.empty() && absl::StartsWith(r.err, "kvctl: ") &&
      absl::StrContains(r.err, why)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "want exit " << code << " and \"kvctl: ...'" << why << "'...\" on stderr; got " << r;
}

// Owns a temporary directory for the runs' output (removed with it) and
// clears KVCTL_ENDPOINTS and KVCTL_CONTROLLERS, so that nothing leaks in from
// the caller's environment: the tests choose the services.
class KvctlRunner {
 public:
  KvctlRunner() {
    unsetenv("KVCTL_CONTROLLERS");
    unsetenv("KVCTL_ENDPOINTS");
    std::string tmpl = ::testing::TempDir() + "/kvctl_runner.XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp " << tmpl;
    dir_ = tmpl;
  }
  ~KvctlRunner() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  KvctlRunner(const KvctlRunner&) = delete;
  KvctlRunner& operator=(const KvctlRunner&) = delete;

  // Runs kvctl with `args` (and `env` added to the environment; `stdin_text`
  // on its stdin), stdout and stderr apart: a shell in front sends stderr to
  // its own file. A run that takes over 60 s is reported as hung.
  KvctlResult Run(const std::vector<std::string>& args, std::vector<std::string> env = {},
                  const std::string& stdin_text = "") {
    const std::string out = absl::StrCat(dir_, "/", runs_, ".out");
    const std::string err = absl::StrCat(dir_, "/", runs_, ".err");
    const std::string in = absl::StrCat(dir_, "/", runs_++, ".in");
    std::ofstream(in) << stdin_text;
    std::vector<std::string> argv = {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>\"$KVCTL_TEST_STDERR\"",
                                     common::BinaryPath("kvctl")};
    argv.insert(argv.end(), args.begin(), args.end());
    env.push_back("KVCTL_TEST_STDERR=" + err);
    const absl::Time start = absl::Now();
    auto p =
        common::Subprocess::Start({.argv = argv, .log_path = out, .stdin_path = in, .env = env});
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return {};
    const std::optional<int> code = (*p)->WaitFor(absl::Seconds(60));
    KvctlResult r;
    r.command = absl::StrJoin(args, " ");
    r.took = absl::Now() - start;
    EXPECT_TRUE(code.has_value()) << "kvctl " << r.command << " hung";
    r.code = code.value_or(-1);
    r.out = Read(out);
    r.err = Read(err);
    return r;
  }

 private:
  static std::string Read(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::string dir_;
  int runs_ = 0;
};

}  // namespace ds::testing
