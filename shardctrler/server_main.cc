// shardctrler-server: one replica of the shard controller (6.824 lab 4A). One
// gRPC port serves the Raft peers, clients (ShardCtrler) and the Replica
// service (Status, Register).
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/init.h"
#include "raft/service/replica_server.h"
#include "shardctrler/ctrl_service.h"
#include "shardctrler/ctrl_state_machine.h"

ABSL_FLAG(int, shards, ds::ctrl::kDefaultShardCount,
          "Number of shards. Fixed when the first configuration is made; every replica must "
          "use the same value, and a restart with another value is refused.");

namespace {

constexpr char kUsage[] = R"(shardctrler-server: one replica of the shard controller.

Usage: shardctrler-server --id=N --peers=1=HOST:PORT,2=HOST:PORT,3=HOST:PORT --data-dir=DIR
                          [--shards=10]
Start one process per replica with the same --peers and --shards. It keeps
every configuration (shard -> replica group, group -> servers) ever made;
kvctl ctrl join/leave/move/query and the shardkv servers talk to any
replica's address. SIGTERM or SIGINT shuts down gracefully.)";

}  // namespace

int main(int argc, char** argv) {
  ds::common::BlockShutdownSignals();
  ds::common::InitProcess(argc, argv, kUsage);
  constexpr char kProgram[] = "shardctrler-server";
  const int shards = absl::GetFlag(FLAGS_shards);
  if (absl::Status st = ds::ctrl::ValidateShardCount(shards); !st.ok()) {
    return ds::rsm::FailStart(kProgram,
                              absl::InvalidArgumentError(absl::StrCat("--shards: ", st.message())));
  }
  auto options = ds::rsm::ReplicaServerOptionsFromFlags(kProgram, "shardctrler");
  if (!options.ok()) return ds::rsm::FailStart(kProgram, options.status());
  // The directory remembers its shard count: a restart with another --shards
  // is refused before anything is read (the log would be applied with the
  // count it was written with anyway; see CtrlStateMachine).
  options->fixed_parameters = {{"shards", absl::StrCat(shards)}};

  ds::ctrl::CtrlStateMachine ctrl({.shard_count = shards});
  auto server = ds::rsm::ReplicaServer::Start(*std::move(options), &ctrl);
  if (!server.ok()) return ds::rsm::FailStart(kProgram, server.status());
  ds::ctrl::CtrlServiceImpl service({.shard_count = shards}, &(*server)->context());
  (*server)->AddService(&service);
  return (*server)->Run();
}
