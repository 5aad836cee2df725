// kvctl: the command line of the KV-Raft service, in the manner of etcdctl.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/clerk.h"
#include "common/init.h"

ABSL_FLAG(std::string, endpoints, "",
          "Comma-separated replica addresses HOST:PORT. Default: $KVCTL_ENDPOINTS.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(2),
          "Deadline of each command, retries on other replicas included.");
ABSL_FLAG(std::string, write_out, "simple", "Output format: simple or json (also -w json).");

namespace {

constexpr char kUsageText[] = R"(kvctl: command line of the KV-Raft service.

Usage: kvctl [flags] COMMAND [ARGS]
  get KEY            print the value (nothing for a missing key; exit 0)
  put KEY VALUE      set KEY to VALUE
  append KEY VALUE   append VALUE to KEY's value (a missing key counts as "")
  del KEY            delete KEY; prints 1 if it existed, else 0
  endpoint status    per replica: id, role, term, leader, commit/applied index,
                     log bytes, snapshot index
  endpoint health    per replica: whether its health check answers
  -  (or nothing)    read one command per line from stdin, print one result per
                     line (one client session for all of them)

Exit status: 0 on success, 1 when a command failed (timeout, unreachable,
server error), 2 on invalid usage or input. Errors go to stderr.)";

enum ExitCode { kOk = 0, kFailed = 1, kUsage = 2 };

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

class Kvctl {
 public:
  Kvctl(ds::client::Clerk* clerk, bool json) : clerk_(clerk), json_(json) {}

  // Runs one command; prints its result to stdout, an error to stderr.
  ExitCode Run(const std::vector<std::string>& args) {
    if (args.empty()) return Usage("no command");
    const std::string& cmd = args[0];
    if (cmd == "get") {
      if (args.size() != 2) return Usage("get takes KEY");
      auto r = clerk_->Get(args[1]);
      if (!r.ok()) return Fail(r.status());
      if (json_) {
        Print(absl::StrCat("{\"key\":", JsonString(args[1]), ",\"found\":",
                           r->found ? "true" : "false", ",\"value\":", JsonString(r->value), "}"));
      } else {
        Print(r->value);
      }
      return kOk;
    }
    if (cmd == "put" || cmd == "append") {
      if (args.size() != 3) return Usage(cmd + " takes KEY VALUE");
      absl::Status st =
          cmd == "put" ? clerk_->Put(args[1], args[2]) : clerk_->Append(args[1], args[2]);
      if (!st.ok()) return Fail(st);
      Print(json_ ? "{\"ok\":true}" : "OK");
      return kOk;
    }
    if (cmd == "del") {
      if (args.size() != 2) return Usage("del takes KEY");
      auto r = clerk_->Delete(args[1]);
      if (!r.ok()) return Fail(r.status());
      Print(json_ ? absl::StrCat("{\"deleted\":", *r ? 1 : 0, "}") : (*r ? "1" : "0"));
      return kOk;
    }
    if (cmd == "endpoint" && args.size() == 2 && args[1] == "status") return EndpointStatus();
    if (cmd == "endpoint" && args.size() == 2 && args[1] == "health") return EndpointHealth();
    return Usage(absl::StrCat("unknown command '", absl::StrJoin(args, " "), "'"));
  }

  // One command per line from stdin; returns the worst exit code.
  ExitCode RunStdin() {
    ExitCode worst = kOk;
    std::string line;
    while (std::getline(std::cin, line)) {
      std::vector<std::string> args = SplitLine(line);
      if (args.empty()) continue;
      ExitCode c = Run(args);
      if (c != kOk) {
        // Keep output aligned with input: one result line per command.
        Print(json_ ? "{\"error\":true}" : "ERROR");
        worst = std::max(worst, c);
      }
    }
    return worst;
  }

 private:
  // "put KEY VALUE WITH SPACES": the value is the rest of the line.
  static std::vector<std::string> SplitLine(const std::string& line) {
    std::vector<std::string> parts =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (parts.size() > 3 && (parts[0] == "put" || parts[0] == "append")) {
      absl::string_view rest = line;
      for (int i = 0; i < 2; ++i) {
        rest = absl::StripLeadingAsciiWhitespace(rest);
        rest.remove_prefix(std::min(rest.size(), rest.find_first_of(" \t")));
      }
      rest = absl::StripLeadingAsciiWhitespace(rest);
      parts.resize(2);
      parts.emplace_back(rest);
    }
    return parts;
  }

  ExitCode EndpointStatus() {
    ExitCode code = kOk;
    std::vector<std::string> json_items;
    for (const auto& e : clerk_->endpoints()) {
      auto s = clerk_->EndpointStatus(e);
      if (!s.ok()) {
        std::cerr << "kvctl: " << s.status().message() << "\n";
        if (json_)
          json_items.push_back(absl::StrCat("{\"endpoint\":", JsonString(e), ",\"error\":",
                                            JsonString(std::string(s.status().message())), "}"));
        code = kFailed;
        continue;
      }
      if (json_) {
        json_items.push_back(absl::StrFormat(
            "{\"endpoint\":%s,\"id\":%d,\"role\":\"%s\",\"term\":%d,\"leader\":%d,\"commit_index\":"
            "%d,"
            "\"applied_index\":%d,\"log_bytes\":%d,\"snapshot_index\":%d,\"snapshot_bytes\":%d,"
            "\"raft_loops\":%d,\"raft_saves\":%d,\"raft_fsyncs\":%d}",
            JsonString(e), s->id(), ds::client::RoleName(s->role()), s->term(), s->leader_id(),
            s->commit_index(), s->applied_index(), s->log_bytes(), s->snapshot_index(),
            s->snapshot_bytes(), s->raft_loops(), s->raft_saves(), s->raft_fsyncs()));
      } else {
        Print(absl::StrFormat(
            "%s id=%d role=%s term=%d leader=%d commit=%d applied=%d log_bytes=%d "
            "snapshot_index=%d",
            e, s->id(), ds::client::RoleName(s->role()), s->term(), s->leader_id(), s->commit_index(),
            s->applied_index(), s->log_bytes(), s->snapshot_index()));
      }
    }
    if (json_) Print(absl::StrCat("[", absl::StrJoin(json_items, ","), "]"));
    return code;
  }

  ExitCode EndpointHealth() {
    ExitCode code = kOk;
    std::vector<std::string> json_items;
    for (const auto& e : clerk_->endpoints()) {
      absl::Status st = clerk_->EndpointHealth(e);
      if (!st.ok()) code = kFailed;
      if (json_) {
        json_items.push_back(absl::StrCat(
            "{\"endpoint\":", JsonString(e), ",\"health\":", st.ok() ? "true" : "false",
            st.ok() ? "" : ",\"error\":", st.ok() ? "" : JsonString(std::string(st.message())),
            "}"));
      } else {
        Print(st.ok() ? absl::StrCat(e, " is healthy")
                      : absl::StrCat(e, " is unhealthy: ", st.message()));
      }
    }
    if (json_) Print(absl::StrCat("[", absl::StrJoin(json_items, ","), "]"));
    return code;
  }

  static void Print(const std::string& line) {
    std::cout << line << "\n";
    std::cout.flush();
  }
  static ExitCode Usage(const std::string& why) {
    std::cerr << "kvctl: " << why << " (see kvctl --help)\n";
    return kUsage;
  }
  static ExitCode Fail(const absl::Status& st) {
    std::cerr << "kvctl: " << st.message() << "\n";
    return st.code() == absl::StatusCode::kInvalidArgument ? kUsage : kFailed;
  }

  ds::client::Clerk* clerk_;
  bool json_;
};

}  // namespace

int main(int argc, char** argv) {
  // etcdctl spells the output flag -w / --write-out.
  std::vector<std::string> rewritten;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-w" || a == "--write-out") a = "--write_out";
    if (absl::StartsWith(a, "-w=") || absl::StartsWith(a, "--write-out=")) {
      a = "--write_out=" + a.substr(a.find('=') + 1);
    }
    rewritten.push_back(a);
  }
  std::vector<char*> args;
  for (auto& a : rewritten) args.push_back(a.data());
  std::vector<std::string> command =
      ds::common::InitProcess(static_cast<int>(args.size()), args.data(), kUsageText);

  const std::string out = absl::GetFlag(FLAGS_write_out);
  if (out != "simple" && out != "json") {
    std::cerr << "kvctl: --write_out must be simple or json\n";
    return kUsage;
  }
  std::string endpoints = absl::GetFlag(FLAGS_endpoints);
  if (endpoints.empty()) {
    const char* env = std::getenv("KVCTL_ENDPOINTS");
    if (env != nullptr) endpoints = env;
  }
  auto list = ds::client::ParseEndpoints(endpoints);
  if (!list.ok()) {
    std::cerr << "kvctl: --endpoints: " << list.status().message() << " (or set KVCTL_ENDPOINTS)\n";
    return kUsage;
  }
  absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
  auto clerk = ds::client::Clerk::Create({
      .endpoints = *list,
      .operation_timeout = timeout,
      .attempt_timeout = std::min(timeout, std::max(timeout / 4, absl::Milliseconds(500))),
  });
  if (!clerk.ok()) {
    std::cerr << "kvctl: " << clerk.status().message() << "\n";
    return kUsage;
  }
  Kvctl kvctl(clerk->get(), out == "json");
  if (command.empty() || (command.size() == 1 && command[0] == "-")) return kvctl.RunStdin();
  return kvctl.Run(command);
}
