#include "client/kvctl_member.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ds::client::cli {
namespace {

// "ID" > 0.
absl::StatusOr<uint64_t> ParseId(const std::string& arg) {
  uint64_t id = 0;
  if (!absl::SimpleAtoi(arg, &id) || id == 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad member id '", arg, "': want a number > 0"));
  }
  return id;
}

const char* RoleOf(const rsm::pb::Member& m) { return m.learner() ? "learner" : "voter"; }

std::vector<rsm::pb::Member> ById(std::vector<rsm::pb::Member> members) {
  std::sort(members.begin(), members.end(),
            [](const rsm::pb::Member& a, const rsm::pb::Member& b) { return a.id() < b.id(); });
  return members;
}

}  // namespace

absl::StatusOr<MemberCommand> ParseMemberCommand(const std::vector<std::string>& all_args,
                                                 bool learner) {
  std::vector<std::string> args;
  for (const std::string& a : all_args) {
    if (a == "--learner" || a == "-learner") {
      learner = true;
    } else {
      args.push_back(a);
    }
  }
  const std::string cmd = args.empty() ? "" : args[0];
  if (learner && cmd != "add") {
    return absl::InvalidArgumentError("--learner goes with member add only");
  }
  MemberCommand out;
  if (cmd == "list") {
    if (args.size() != 1) return absl::InvalidArgumentError("member list takes no arguments");
    out.list = true;
    return out;
  }
  if (cmd == "add") {
    if (args.size() != 2) {
      return absl::InvalidArgumentError("member add takes ID=HOST:PORT [--learner]");
    }
    const std::string& arg = args[1];
    const size_t eq = arg.find('=');
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad member '", arg, "': want ID=HOST:PORT (its Raft address)"));
    }
    auto id = ParseId(arg.substr(0, eq));
    if (!id.ok()) return id.status();
    auto address = ParseEndpoints(arg.substr(eq + 1));
    if (!address.ok() || address->size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad member address '", arg.substr(eq + 1), "': want one HOST:PORT"));
    }
    out.change = {MemberChange::Kind::kAdd, *id, (*address)[0], learner};
    return out;
  }
  if (cmd == "promote" || cmd == "remove") {
    if (args.size() != 2)
      return absl::InvalidArgumentError(absl::StrCat("member ", cmd, " takes ID"));
    auto id = ParseId(args[1]);
    if (!id.ok()) return id.status();
    out.change.kind = cmd == "promote" ? MemberChange::Kind::kPromote : MemberChange::Kind::kRemove;
    out.change.id = *id;
    return out;
  }
  if (cmd.empty()) return absl::InvalidArgumentError("member takes list, add, promote or remove");
  return absl::InvalidArgumentError(
      absl::StrCat("unknown command 'member ", absl::StrJoin(args, " "), "'"));
}

std::string MembersText(const std::vector<rsm::pb::Member>& members) {
  std::vector<std::string> lines;
  for (const rsm::pb::Member& m : ById(members)) {
    lines.push_back(
        absl::StrCat(m.id(), " ", m.address().empty() ? "-" : m.address(), " ", RoleOf(m)));
  }
  return absl::StrJoin(lines, "\n");
}

std::string MembersJson(const std::vector<rsm::pb::Member>& members) {
  std::vector<std::string> items;
  for (const rsm::pb::Member& m : ById(members)) {
    items.push_back(absl::StrCat("{\"id\":", m.id(), ",\"address\":", JsonString(m.address()),
                                 ",\"role\":\"", RoleOf(m), "\"}"));
  }
  return absl::StrCat("[", absl::StrJoin(items, ","), "]");
}

ExitCode RunMember(const MemberCommand& command, const std::vector<std::string>& endpoints,
                   const RetryOptions& options,
                   const std::shared_ptr<grpc::ChannelCredentials>& credentials, bool json) {
  std::vector<rsm::pb::Member> members;
  if (command.list) {
    auto list = LeaderMemberList(endpoints, options, credentials);
    if (!list.ok()) return Fail(list.status());
    members.assign(list->members().begin(), list->members().end());
  } else {
    auto after = ChangeMembership(endpoints, command.change, options, credentials);
    if (!after.ok()) return Fail(after.status());
    members = std::move(*after);
    if (!json) {
      const MemberChange& c = command.change;
      switch (c.kind) {
        case MemberChange::Kind::kAdd:
          Print(absl::StrCat("member ", c.id, " added as ", c.learner ? "learner" : "voter"));
          break;
        case MemberChange::Kind::kPromote:
          Print(absl::StrCat("member ", c.id, " promoted to voter"));
          break;
        case MemberChange::Kind::kRemove:
          Print(absl::StrCat("member ", c.id, " removed"));
          break;
      }
    }
  }
  if (json) {
    Print(MembersJson(members));
  } else if (!members.empty()) {
    Print(MembersText(members));
  }
  return kOk;
}

}  // namespace ds::client::cli
