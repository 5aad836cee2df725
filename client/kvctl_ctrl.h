// kvctl ctrl: the shard controller commands of kvctl.
//   ctrl join G=H:P,H:P [G2=H:P,...]   add replica groups (one configuration)
//   ctrl leave G [G2 ...]              remove groups (one configuration)
//   ctrl move SHARD G                  assign one shard to a group
//   ctrl servers G H:P,H:P             replace a group's server list
//   ctrl query [NUM]                   a configuration (default: the latest)
// The names, the text layout and the JSON layout below are a contract other
// tools depend on.
#pragma once

#include <string>
#include <vector>

#include "client/cli_output.h"
#include "client/ctrl_client.h"
#include "proto/shardctrler.pb.h"

namespace ds::client::cli {

// Runs `args` (after "ctrl"); prints the result to stdout, errors to stderr.
ExitCode RunCtrl(CtrlClerk& clerk, const std::vector<std::string>& args, bool json);

// `config` as text: "num N", then one line per group,
// "gid G shards S1,S2,... servers H:P,H:P", and "gid 0 shards ..." for
// unassigned shards, if any.
std::string ConfigText(const ctrl::pb::Config& config);
// `config` as JSON: {"num": N, "shards": [gid of shard 0, ...],
// "groups": {"G": ["H:P", ...], ...}}.
std::string ConfigJson(const ctrl::pb::Config& config);

}  // namespace ds::client::cli
