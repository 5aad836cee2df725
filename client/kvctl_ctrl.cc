#include "client/kvctl_ctrl.h"

#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace ds::client::cli {
namespace {

// "G=H:P,H:P" -> (G, servers).
absl::Status ParseGroup(const std::string& arg, GroupServers* groups) {
  const size_t eq = arg.find('=');
  uint64_t gid = 0;
  if (eq == std::string::npos || !absl::SimpleAtoi(arg.substr(0, eq), &gid) || gid == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad group '", arg, "': want GID=HOST:PORT,HOST:PORT,... with GID > 0"));
  }
  auto servers = ParseEndpoints(arg.substr(eq + 1));
  if (!servers.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("group ", gid, ": ", servers.status().message()));
  }
  if (!groups->emplace(gid, *servers).second) {
    return absl::InvalidArgumentError(absl::StrCat("group ", gid, " given twice"));
  }
  return absl::OkStatus();
}

ExitCode Made(absl::StatusOr<uint64_t> num, bool json) {
  if (!num.ok()) return Fail(num.status());
  Print(json ? absl::StrCat("{\"ok\":true,\"num\":", *num, "}")
             : absl::StrCat("OK (configuration ", *num, ")"));
  return kOk;
}

}  // namespace

std::string ConfigText(const ctrl::pb::Config& config) {
  std::map<uint64_t, std::vector<int>> shards;
  for (int s = 0; s < config.shards_size(); ++s) shards[config.shards(s)].push_back(s);
  std::string out = absl::StrCat("num ", config.num());
  if (shards.contains(0)) absl::StrAppend(&out, "\ngid 0 shards ", absl::StrJoin(shards[0], ","));
  for (const ctrl::pb::Group& g : config.groups()) {
    absl::StrAppend(&out, "\ngid ", g.gid(), " shards ",
                    shards.contains(g.gid()) ? absl::StrJoin(shards[g.gid()], ",") : "-",
                    " servers ", absl::StrJoin(g.servers(), ","));
  }
  return out;
}

std::string ConfigJson(const ctrl::pb::Config& config) {
  std::vector<std::string> groups;
  for (const ctrl::pb::Group& g : config.groups()) {
    std::vector<std::string> servers;
    for (const std::string& s : g.servers()) servers.push_back(JsonString(s));
    groups.push_back(absl::StrCat("\"", g.gid(), "\":[", absl::StrJoin(servers, ","), "]"));
  }
  return absl::StrCat("{\"num\":", config.num(), ",\"shards\":[",
                      absl::StrJoin(config.shards(), ","), "],\"groups\":{",
                      absl::StrJoin(groups, ","), "}}");
}

ExitCode RunCtrl(CtrlClerk& clerk, const std::vector<std::string>& args, bool json) {
  if (args.empty()) return Usage("ctrl takes join, leave, move, servers or query");
  const std::string& cmd = args[0];
  if (cmd == "join") {
    if (args.size() < 2) return Usage("ctrl join takes GID=HOST:PORT,... [GID=...]");
    GroupServers groups;
    for (size_t i = 1; i < args.size(); ++i) {
      if (absl::Status st = ParseGroup(args[i], &groups); !st.ok())
        return Usage(std::string(st.message()));
    }
    return Made(clerk.Join(std::move(groups)), json);
  }
  if (cmd == "leave") {
    if (args.size() < 2) return Usage("ctrl leave takes GID [GID ...]");
    std::vector<uint64_t> gids;
    for (size_t i = 1; i < args.size(); ++i) {
      uint64_t gid = 0;
      if (!absl::SimpleAtoi(args[i], &gid) || gid == 0) {
        return Usage(absl::StrCat("bad group id '", args[i], "'"));
      }
      gids.push_back(gid);
    }
    return Made(clerk.Leave(std::move(gids)), json);
  }
  if (cmd == "move") {
    uint32_t shard = 0;
    uint64_t gid = 0;
    if (args.size() != 3 || !absl::SimpleAtoi(args[1], &shard) ||
        !absl::SimpleAtoi(args[2], &gid) || gid == 0) {
      return Usage("ctrl move takes SHARD GID");
    }
    return Made(clerk.Move(shard, gid), json);
  }
  if (cmd == "servers") {
    uint64_t gid = 0;
    if (args.size() != 3 || !absl::SimpleAtoi(args[1], &gid) || gid == 0) {
      return Usage("ctrl servers takes GID HOST:PORT,HOST:PORT,...");
    }
    auto servers = ParseEndpoints(args[2]);
    if (!servers.ok()) return Usage(absl::StrCat("group ", gid, ": ", servers.status().message()));
    return Made(clerk.Servers(gid, *std::move(servers)), json);
  }
  if (cmd == "query") {
    int64_t num = -1;
    if (args.size() > 2 || (args.size() == 2 && (!absl::SimpleAtoi(args[1], &num) || num < 0))) {
      return Usage("ctrl query takes [NUM], a configuration number >= 0");
    }
    auto config = clerk.Query(num);
    if (!config.ok()) return Fail(config.status());
    Print(json ? ConfigJson(*config) : ConfigText(*config));
    return kOk;
  }
  return Usage(absl::StrCat("unknown command 'ctrl ", absl::StrJoin(args, " "), "'"));
}

}  // namespace ds::client::cli
