// kvraft-server: one replica of the Raft-replicated key/value service. One gRPC
// port serves the Raft peers (RaftService), clients (KvService) and the
// Replica service (Status, Register).
#include "absl/flags/flag.h"
#include "common/init.h"
#include "kvraft/kv_service.h"
#include "kvraft/kv_state_machine.h"
#include "raft/service/replica_server.h"

ABSL_FLAG(uint64_t, max_request_bytes, 1536 * 1024,
          "Largest key + value of one request, in bytes.");

namespace {

constexpr char kUsage[] = R"(kvraft-server: one replica of the Raft-replicated key/value service.

Usage: kvraft-server --id=N --peers=1=HOST:PORT,2=HOST:PORT,3=HOST:PORT --data-dir=DIR
Start one process per replica with the same --peers. Clients (kvctl, kvbench)
talk to any replica's address; a follower answers UNAVAILABLE with the
leader's address. Restarting with the same --data-dir recovers every
acknowledged write. SIGTERM or SIGINT shuts down gracefully.)";

}  // namespace

int main(int argc, char** argv) {
  ds::common::BlockShutdownSignals();
  ds::common::InitProcess(argc, argv, kUsage);
  constexpr char kProgram[] = "kvraft-server";
  auto options = ds::rsm::ReplicaServerOptionsFromFlags(kProgram, "kvraft");
  if (!options.ok()) return ds::rsm::FailStart(kProgram, options.status());

  ds::kv::KvStateMachine kv;
  auto server = ds::rsm::ReplicaServer::Start(*std::move(options), &kv);
  if (!server.ok()) return ds::rsm::FailStart(kProgram, server.status());
  ds::kv::KvServiceImpl service({.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes)},
                                &(*server)->context());
  (*server)->AddService(&service, [&service] { service.CloseStreams(); });
  return (*server)->Run();
}
