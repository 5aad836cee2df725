// kvctl member: the membership commands of kvctl, Raft configuration changes
// of one replica group (the kvraft replicas of --endpoints, or the shard
// controller's of --controllers; docs/operations.md):
//   member list                        the leader's configuration
//   member add ID=HOST:PORT [--learner] add a member (HOST:PORT: its Raft address)
//   member promote ID                  make a learner a voter
//   member remove ID                   remove a member (the leader too)
// Text: changes print "member ID added as voter|learner", "member ID promoted
// to voter" or "member ID removed" first; then (and for list) one line per
// member, by id, "ID HOST:PORT voter|learner". -w json: the configuration,
// [{"id":N,"address":"H:P","role":"voter"|"learner"},...]. The names and
// layouts are a contract other tools depend on.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/cli_output.h"
#include "client/replica_client.h"
#include "grpcpp/grpcpp.h"
#include "proto/rsm.pb.h"

namespace ds::client::cli {

// A parsed member command.
struct MemberCommand {
  bool list = false;    // member list; else `change`
  MemberChange change;  // add, promote, remove
};

// Parses `args` (after "member"); `learner` is kvctl's --learner (only for
// add; "--learner" among `args` counts too, for stdin mode). kInvalidArgument
// with the reason on a usage error.
absl::StatusOr<MemberCommand> ParseMemberCommand(const std::vector<std::string>& args,
                                                 bool learner);

// Runs `command` against the group at `endpoints`; prints the result to
// stdout, an error to stderr.
ExitCode RunMember(const MemberCommand& command, const std::vector<std::string>& endpoints,
                   const RetryOptions& options,
                   const std::shared_ptr<grpc::ChannelCredentials>& credentials, bool json);

// The configuration as text (one "ID HOST:PORT voter|learner" line per
// member, "-" for an unknown address) and as JSON (see above).
std::string MembersText(const std::vector<rsm::pb::Member>& members);
std::string MembersJson(const std::vector<rsm::pb::Member>& members);

}  // namespace ds::client::cli
