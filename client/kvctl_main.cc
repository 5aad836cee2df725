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
#include "client/cli_output.h"
#include "client/ctrl_client.h"
#include "client/kvctl_ctrl.h"
#include "client/kvctl_member.h"
#include "client/shardkv_client.h"
#include "common/init.h"
#include "common/tls.h"

ABSL_FLAG(std::string, endpoints, "",
          "Comma-separated replica addresses HOST:PORT. Default: $KVCTL_ENDPOINTS.");
ABSL_FLAG(std::string, controllers, "",
          "Comma-separated shard controller addresses HOST:PORT: for the ctrl commands and, "
          "without --endpoints, for the KV commands (the sharded service) and the member "
          "commands (the controller's own group). Default: $KVCTL_CONTROLLERS.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(2),
          "Deadline of each command, retries on other replicas included.");
ABSL_FLAG(std::string, write_out, "simple", "Output format: simple or json (also -w json).");
ABSL_FLAG(bool, learner, false,
          "member add: add the member as a learner (it receives the log but does not vote; "
          "promote it once it has caught up).");

namespace {

using namespace ds::client::cli;  // NOLINT: ExitCode, Print, Usage, Fail

constexpr char kUsageText[] =
    R"(kvctl: command line of the KV-Raft service and the shard controller.

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

With --controllers (or $KVCTL_CONTROLLERS) and no --endpoints, get/put/
append/del go to the sharded service, routed by each key's shard, and
  locate KEY         which shard and group serve KEY: "key K shard S gid G
                     servers H:P,..."; -w json: {"key":K,"shard":S,"gid":G,
                     "servers":[...]}
  endpoint status    covers every replica of every group (with its shards)

Shard controller (--controllers or $KVCTL_CONTROLLERS):
  ctrl join GID=HOST:PORT,HOST:PORT [GID=...]   add replica groups
  ctrl leave GID [GID ...]                       remove replica groups
  ctrl move SHARD GID                            assign one shard to a group
  ctrl servers GID HOST:PORT,HOST:PORT          replace a group's server list (a
                                                 shardkv group's leader does this
                                                 itself after a membership change)
  ctrl query [NUM]   a configuration (default the latest): "num N", then one
                     line per group "gid G shards 0,1,... servers H:P,...";
                     -w json: {"num":N,"shards":[gid of shard 0,...],
                     "groups":{"G":["H:P",...]}}

Membership of the replica group of --endpoints (or, with --controllers and
no --endpoints, of the shard controller); see docs/operations.md:
  member list        the leader's configuration, one line per member:
                     "ID HOST:PORT voter|learner"
  member add ID=HOST:PORT [--learner]
                     add member ID; HOST:PORT is its Raft address (its entry
                     in --peers); --learner: it does not vote until promoted
  member promote ID  make a learner that has caught up a voter
  member remove ID   remove member ID (the leader too); ids are never reused
  A change prints "member ID added as learner|voter", "member ID promoted to
  voter" or "member ID removed", then the new configuration. -w json: the
  configuration, [{"id":N,"address":"H:P","role":"voter"|"learner"},...].
  Changes go to the leader and are retried (leader unknown or moving, another
  change in progress) until --timeout.

Exit status: 0 on success, 1 when a command failed (timeout, unreachable,
server error), 2 on invalid usage or input. Errors go to stderr.)";

// The endpoint list from a flag or, if it is empty, an environment variable.
absl::StatusOr<std::vector<std::string>> Endpoints(const std::string& flag, const char* flag_name,
                                                   const char* env_name) {
  std::string list = flag;
  if (list.empty()) {
    if (const char* env = std::getenv(env_name); env != nullptr) list = env;
  }
  auto parsed = ds::client::ParseEndpoints(list);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag_name, ": ", parsed.status().message(), " (or set ", env_name, ")"));
  }
  return parsed;
}

// The KV commands of either service: kvraft (one group, --endpoints) or the
// sharded service (routed through the controller's configuration,
// --controllers).
class KvOps {
 public:
  virtual ~KvOps() = default;
  virtual absl::StatusOr<ds::client::GetResult> Get(const std::string& key) = 0;
  virtual absl::Status Put(const std::string& key, const std::string& value) = 0;
  virtual absl::Status Append(const std::string& key, const std::string& value) = 0;
  virtual absl::StatusOr<bool> Delete(const std::string& key) = 0;
};

template <typename Clerk>
class KvOpsOf final : public KvOps {
 public:
  explicit KvOpsOf(std::unique_ptr<Clerk> clerk) : clerk_(std::move(clerk)) {}
  absl::StatusOr<ds::client::GetResult> Get(const std::string& key) override {
    return clerk_->Get(key);
  }
  absl::Status Put(const std::string& key, const std::string& value) override {
    return clerk_->Put(key, value);
  }
  absl::Status Append(const std::string& key, const std::string& value) override {
    return clerk_->Append(key, value);
  }
  absl::StatusOr<bool> Delete(const std::string& key) override { return clerk_->Delete(key); }
  Clerk& clerk() { return *clerk_; }

 private:
  std::unique_ptr<Clerk> clerk_;
};

// Sharded mode: --controllers without --endpoints (flags first, then
// $KVCTL_ENDPOINTS / $KVCTL_CONTROLLERS).
bool ShardedMode() {
  if (!absl::GetFlag(FLAGS_endpoints).empty()) return false;
  if (!absl::GetFlag(FLAGS_controllers).empty()) return true;
  const char* endpoints = std::getenv("KVCTL_ENDPOINTS");
  if (endpoints != nullptr && *endpoints != '\0') return false;
  const char* controllers = std::getenv("KVCTL_CONTROLLERS");
  return controllers != nullptr && *controllers != '\0';
}

class Kvctl {
 public:
  Kvctl(ds::client::ClerkOptions options, bool json) : options_(std::move(options)), json_(json) {}

  // Runs one command; prints its result to stdout, an error to stderr.
  ExitCode Run(const std::vector<std::string>& args) {
    if (args.empty()) return Usage("no command");
    const std::string& cmd = args[0];
    if (absl::GetFlag(FLAGS_learner) && cmd != "member") {
      return Usage("--learner goes with member add only");
    }
    if (cmd == "member") return Member(std::vector<std::string>(args.begin() + 1, args.end()));
    if (cmd == "ctrl") {
      if (ExitCode c = EnsureCtrl(); c != kOk) return c;
      return RunCtrl(*ctrl_, std::vector<std::string>(args.begin() + 1, args.end()), json_);
    }
    if (cmd == "endpoint" && args.size() == 2 && (args[1] == "status" || args[1] == "health")) {
      auto endpoints = StatusEndpoints();
      if (!endpoints.ok()) return Fail(endpoints.status());
      return args[1] == "status" ? EndpointStatus(*endpoints) : EndpointHealth(*endpoints);
    }
    if (cmd == "locate") {
      if (args.size() != 2) return Usage("locate takes KEY");
      if (ExitCode c = EnsureKv(); c != kOk) return c;
      if (sharded_ == nullptr) return Usage("locate needs --controllers (the sharded service)");
      return Locate(args[1]);
    }
    if (cmd != "get" && cmd != "put" && cmd != "append" && cmd != "del") {
      return Usage(absl::StrCat("unknown command '", absl::StrJoin(args, " "), "'"));
    }
    if (ExitCode c = EnsureKv(); c != kOk) return c;
    if (cmd == "get") {
      if (args.size() != 2) return Usage("get takes KEY");
      auto r = kv_->Get(args[1]);
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
      absl::Status st = cmd == "put" ? kv_->Put(args[1], args[2]) : kv_->Append(args[1], args[2]);
      if (!st.ok()) return Fail(st);
      Print(json_ ? "{\"ok\":true}" : "OK");
      return kOk;
    }
    if (args.size() != 2) return Usage("del takes KEY");
    auto r = kv_->Delete(args[1]);
    if (!r.ok()) return Fail(r.status());
    Print(json_ ? absl::StrCat("{\"deleted\":", *r ? 1 : 0, "}") : (*r ? "1" : "0"));
    return kOk;
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
  ExitCode EnsureCtrl() {
    if (ctrl_ != nullptr) return kOk;
    auto endpoints =
        Endpoints(absl::GetFlag(FLAGS_controllers), "--controllers", "KVCTL_CONTROLLERS");
    if (!endpoints.ok()) return Usage(std::string(endpoints.status().message()));
    ds::client::ClerkOptions o = options_;
    o.endpoints = *endpoints;
    auto clerk = ds::client::CtrlClerk::Create(o);
    if (!clerk.ok()) return Fail(clerk.status());
    ctrl_ = std::move(*clerk);
    return kOk;
  }

  // The KV clerk of the mode in use, made at the first KV command (one
  // session for every command of this run).
  ExitCode EnsureKv() {
    if (kv_ != nullptr) return kOk;
    const bool sharded = ShardedMode();
    auto endpoints =
        sharded ? Endpoints(absl::GetFlag(FLAGS_controllers), "--controllers", "KVCTL_CONTROLLERS")
                : Endpoints(absl::GetFlag(FLAGS_endpoints), "--endpoints", "KVCTL_ENDPOINTS");
    if (!endpoints.ok()) {
      return Usage(absl::StrCat(endpoints.status().message(),
                                "; the sharded service takes --controllers instead"));
    }
    ds::client::ClerkOptions o = options_;
    o.endpoints = *endpoints;
    if (sharded) {
      auto clerk = ds::client::ShardKvClerk::Create(o);
      if (!clerk.ok()) return Fail(clerk.status());
      auto ops = std::make_unique<KvOpsOf<ds::client::ShardKvClerk>>(std::move(*clerk));
      sharded_ = &ops->clerk();
      kv_ = std::move(ops);
    } else {
      auto clerk = ds::client::Clerk::Create(o);
      if (!clerk.ok()) return Fail(clerk.status());
      kv_ = std::make_unique<KvOpsOf<ds::client::Clerk>>(std::move(*clerk));
    }
    return kOk;
  }

  // endpoint status/health: the --endpoints replicas; in sharded mode every
  // replica of every group of the latest configuration.
  absl::StatusOr<std::vector<std::string>> StatusEndpoints() {
    if (!ShardedMode()) {
      return Endpoints(absl::GetFlag(FLAGS_endpoints), "--endpoints", "KVCTL_ENDPOINTS");
    }
    if (ExitCode c = EnsureCtrl(); c != kOk) return absl::InvalidArgumentError("--controllers");
    auto config = ctrl_->Query(-1);
    if (!config.ok()) return config.status();
    std::vector<std::string> all;
    for (const auto& g : config->groups())
      all.insert(all.end(), g.servers().begin(), g.servers().end());
    if (all.empty()) return absl::FailedPreconditionError("no group has joined yet");
    return all;
  }

  // member ...: at the group of --endpoints, or the controller's in sharded
  // mode.
  ExitCode Member(const std::vector<std::string>& args) {
    auto command = ds::client::cli::ParseMemberCommand(args, absl::GetFlag(FLAGS_learner));
    if (!command.ok()) return Usage(std::string(command.status().message()));
    auto endpoints =
        ShardedMode()
            ? Endpoints(absl::GetFlag(FLAGS_controllers), "--controllers", "KVCTL_CONTROLLERS")
            : Endpoints(absl::GetFlag(FLAGS_endpoints), "--endpoints", "KVCTL_ENDPOINTS");
    if (!endpoints.ok()) {
      return Usage(absl::StrCat(endpoints.status().message(),
                                "; the shard controller's group takes --controllers instead"));
    }
    return RunMember(*command, *endpoints, ds::client::ToRetryOptions(options_),
                     options_.credentials, json_);
  }

  ExitCode Locate(const std::string& key) {
    auto where = sharded_->Locate(key);
    if (!where.ok()) return Fail(where.status());
    std::vector<std::string> servers;
    for (const auto& s : where->servers) servers.push_back(JsonString(s));
    if (json_) {
      Print(absl::StrCat("{\"key\":", JsonString(key), ",\"shard\":", where->shard, ",\"gid\":",
                         where->gid, ",\"servers\":[", absl::StrJoin(servers, ","), "]}"));
    } else {
      Print(absl::StrCat("key ", key, " shard ", where->shard, " gid ", where->gid, " servers ",
                         where->servers.empty() ? "-" : absl::StrJoin(where->servers, ","),
                         " (configuration ", where->config_num, ")"));
    }
    return kOk;
  }

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

  ExitCode EndpointStatus(const std::vector<std::string>& endpoints) {
    ExitCode code = kOk;
    std::vector<std::string> json_items;
    for (const auto& e : endpoints) {
      auto s = ds::client::ReplicaStatus(e, options_.attempt_timeout, options_.credentials);
      if (!s.ok()) {
        std::cerr << "kvctl: " << s.status().message() << "\n";
        if (json_)
          json_items.push_back(absl::StrCat("{\"endpoint\":", JsonString(e), ",\"error\":",
                                            JsonString(std::string(s.status().message())), "}"));
        code = kFailed;
        continue;
      }
      std::string shards_json;
      std::string shards_text;
      if (s->gid() != 0) {
        std::vector<std::string> items;
        std::vector<std::string> texts;
        for (const auto& sh : s->shards()) {
          items.push_back(absl::StrFormat(
              "{\"shard\":%d,\"owner\":%d,\"state\":\"%s\",\"config_num\":%d,\"keys\":%d}",
              sh.shard(), sh.owner(), sh.state(), sh.config_num(), sh.keys()));
          if (sh.state() != "not-owned") {
            texts.push_back(absl::StrCat(sh.shard(), ":", sh.state(), "(", sh.keys(), " keys)"));
          }
        }
        shards_json = absl::StrFormat(",\"gid\":%d,\"config_num\":%d,\"shards\":[%s]", s->gid(),
                                      s->config_num(), absl::StrJoin(items, ","));
        shards_text = absl::StrCat(" gid=", s->gid(), " config=", s->config_num(),
                                   " shards=", texts.empty() ? "-" : absl::StrJoin(texts, ","));
      }
      if (json_) {
        json_items.push_back(absl::StrFormat(
            "{\"endpoint\":%s,\"id\":%d,\"role\":\"%s\",\"term\":%d,\"leader\":%d,\"commit_index\":"
            "%d,"
            "\"applied_index\":%d,\"log_bytes\":%d,\"snapshot_index\":%d,\"snapshot_bytes\":%d,"
            "\"raft_loops\":%d,\"raft_saves\":%d,\"raft_fsyncs\":%d,\"sessions\":%d%s}",
            JsonString(e), s->id(), ds::client::RoleName(s->role()), s->term(), s->leader_id(),
            s->commit_index(), s->applied_index(), s->log_bytes(), s->snapshot_index(),
            s->snapshot_bytes(), s->raft_loops(), s->raft_saves(), s->raft_fsyncs(), s->sessions(),
            shards_json));
      } else {
        Print(
            absl::StrFormat("%s id=%d role=%s term=%d leader=%d commit=%d applied=%d log_bytes=%d "
                            "snapshot_index=%d%s",
                            e, s->id(), ds::client::RoleName(s->role()), s->term(), s->leader_id(),
                            s->commit_index(), s->applied_index(), s->log_bytes(),
                            s->snapshot_index(), shards_text));
      }
    }
    if (json_) Print(absl::StrCat("[", absl::StrJoin(json_items, ","), "]"));
    return code;
  }

  ExitCode EndpointHealth(const std::vector<std::string>& endpoints) {
    ExitCode code = kOk;
    std::vector<std::string> json_items;
    for (const auto& e : endpoints) {
      absl::Status st =
          ds::client::ReplicaHealth(e, options_.attempt_timeout, options_.credentials);
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

  const ds::client::ClerkOptions options_;  // everything but the endpoints
  const bool json_;
  std::unique_ptr<KvOps> kv_;                    // made at the first KV command
  ds::client::ShardKvClerk* sharded_ = nullptr;  // kv_'s, in sharded mode
  std::unique_ptr<ds::client::CtrlClerk> ctrl_;  // made at the first ctrl command
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
    return Usage("--write_out must be simple or json");
  }
  absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
  ds::client::ClerkOptions options;
  options.operation_timeout = timeout;
  options.attempt_timeout = std::min(timeout, std::max(timeout / 4, absl::Milliseconds(500)));
  if (timeout <= absl::ZeroDuration()) return Usage("--timeout must be positive");
  auto credentials = ds::common::ClientCredentialsFromFlags();
  if (!credentials.ok()) return Usage(std::string(credentials.status().message()));
  options.credentials = *credentials;
  Kvctl kvctl(options, out == "json");
  if (command.empty() || (command.size() == 1 && command[0] == "-")) return kvctl.RunStdin();
  return kvctl.Run(command);
}
