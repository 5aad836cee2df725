// shardkv-server: one replica of one replica group of the sharded key/value
// service. One gRPC port serves the Raft peers, clients (KvService), the
// other groups (ShardMigration) and the Replica service (Status, Register).
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "client/ctrl_client.h"
#include "common/init.h"
#include "kvraft/kv_service.h"
#include "raft/service/replica_server.h"
#include "shardkv/driver.h"
#include "shardkv/migration_client.h"
#include "shardkv/shardkv_service.h"
#include "shardkv/shardkv_state_machine.h"

ABSL_FLAG(uint64_t, gid, 0,
          "This replica's group id (> 0), as joined at the controller. Required.");
ABSL_FLAG(std::string, controllers, "",
          "Comma-separated shard controller addresses HOST:PORT. Required.");
ABSL_FLAG(absl::Duration, poll_interval, absl::Milliseconds(100),
          "How often the group's leader asks the controller for a new configuration and looks "
          "for shards to pull or release.");
ABSL_FLAG(uint64_t, migration_chunk_bytes, 1 << 20,
          "Bytes of keys and values per chunk when a shard moves between groups.");
ABSL_FLAG(uint64_t, max_request_bytes, 1536 * 1024,
          "Largest key + value of one request, in bytes.");

namespace {

constexpr char kUsage[] =
    R"(shardkv-server: one replica of one replica group of the sharded key/value service.

Usage: shardkv-server --gid=G --id=N --peers=1=HOST:PORT,2=HOST:PORT,3=HOST:PORT
                     --controllers=HOST:PORT,... --data-dir=DIR
Start one process per replica of group G with the same --peers, then join the
group at the controller (kvctl ctrl join G=HOST:PORT,...). The group serves
the shards the controller assigns it and moves shards to and from other
groups as configurations change. Clients: kvctl --controllers=...
SIGTERM or SIGINT shuts down gracefully.)";

// The controller, through a blocking clerk.
class Controller final : public ds::shardkv::ConfigSource {
 public:
  explicit Controller(std::unique_ptr<ds::client::CtrlClerk> clerk) : clerk_(std::move(clerk)) {}
  absl::StatusOr<uint64_t> Latest() override { return clerk_->Latest(); }
  absl::StatusOr<ds::ctrl::pb::Config> Query(uint64_t num) override {
    return clerk_->Query(static_cast<int64_t>(num));
  }
  absl::StatusOr<uint64_t> Servers(uint64_t gid, std::vector<std::string> servers) override {
    return clerk_->Servers(gid, std::move(servers));
  }

 private:
  std::unique_ptr<ds::client::CtrlClerk> clerk_;
};

}  // namespace

int main(int argc, char** argv) {
  ds::common::BlockShutdownSignals();
  ds::common::InitProcess(argc, argv, kUsage);
  constexpr char kProgram[] = "shardkv-server";
  const uint64_t gid = absl::GetFlag(FLAGS_gid);
  if (gid == 0) {
    return ds::rsm::FailStart(kProgram, absl::InvalidArgumentError("--gid (> 0) is required"));
  }
  auto controllers = ds::client::ParseEndpoints(absl::GetFlag(FLAGS_controllers));
  if (!controllers.ok()) {
    return ds::rsm::FailStart(kProgram, absl::InvalidArgumentError(absl::StrCat(
                                            "--controllers: ", controllers.status().message())));
  }
  auto options = ds::rsm::ReplicaServerOptionsFromFlags(kProgram, "shardkv");
  if (!options.ok()) return ds::rsm::FailStart(kProgram, options.status());
  // A data directory belongs to one group for good.
  options->fixed_parameters = {{"gid", absl::StrCat(gid)}};

  ds::shardkv::ShardKvStateMachine sm(gid);
  options->service.status_extra = [&sm](ds::rsm::pb::StatusResponse* resp) {
    const ds::shardkv::ShardKvStateMachine::View v = sm.view();
    resp->set_gid(v.gid);
    resp->set_config_num(v.current.num());
    for (size_t s = 0; s < v.states.size(); ++s) {
      ds::rsm::pb::ShardStatus* st = resp->add_shards();
      st->set_shard(static_cast<uint32_t>(s));
      st->set_owner(v.current.shards(static_cast<int>(s)));
      st->set_state(ds::shardkv::StateName(v.states[s]));
      st->set_config_num(v.current.num());
      st->set_keys(v.keys[s]);
    }
  };
  const absl::Duration request_timeout = options->service.request_timeout;
  const bool separate_peer_port = !options->listen_peer.empty();
  auto server = ds::rsm::ReplicaServer::Start(*std::move(options), &sm);
  if (!server.ok()) return ds::rsm::FailStart(kProgram, server.status());

  ds::shardkv::ShardKvBackend backend;
  ds::kv::KvServiceImpl kv(
      {.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes), .backend = &backend},
      &(*server)->context());
  // Migration stays on the client port (the controller's configurations list
  // the groups' client addresses); under TLS only peers' certificates may
  // call it.
  ds::shardkv::MigrationServiceImpl migration(&(*server)->context(), (*server)->peer_authorizer());
  (*server)->AddService(&kv, [&kv] { kv.CloseStreams(); });
  (*server)->AddService(&migration);

  // The driver's clients: short attempts, so that a group that is down delays
  // the others' shards by little.
  ds::client::RetryOptions retry{.operation_timeout = std::min(request_timeout, absl::Seconds(3)),
                                 .attempt_timeout = absl::Milliseconds(500)};
  auto ctrl =
      ds::client::CtrlClerk::Create({.endpoints = *controllers,
                                     .operation_timeout = retry.operation_timeout,
                                     .attempt_timeout = retry.attempt_timeout,
                                     .credentials = (*server)->credentials_to_client_ports()});
  if (!ctrl.ok()) return ds::rsm::FailStart(kProgram, ctrl.status());
  Controller controller(std::move(*ctrl));
  ds::shardkv::GrpcPeerGroups groups(retry, (*server)->credentials_to_client_ports());
  // What the controller should list for a member of this group: its client
  // address from --client-endpoints / --peers, else (a member added since
  // this replica started) its address in the Raft configuration, which is
  // its client address too unless Raft has a port of its own: then unknown,
  // and the driver leaves the controller's list alone.
  const ds::rsm::ReplicaContext& context = (*server)->context();
  auto member_address = [&context, separate_peer_port](uint64_t id) -> std::string {
    const auto& known = context.options().addresses;
    if (auto it = known.find(id); it != known.end()) return it->second;
    return separate_peer_port ? "" : context.Address(id);
  };
  ds::shardkv::ShardKvDriver driver({.poll_interval = absl::GetFlag(FLAGS_poll_interval),
                                     .chunk_bytes = absl::GetFlag(FLAGS_migration_chunk_bytes),
                                     .member_address = member_address},
                                    &(*server)->rsm(), &sm, &controller, &groups,
                                    (*server)->logger());
  driver.Start();
  const int code = (*server)->Run();
  driver.Stop();
  return code;
}
