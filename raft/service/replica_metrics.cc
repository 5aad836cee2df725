#include "raft/service/replica_metrics.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "prometheus/registry.h"
#include "proto/rsm.pb.h"

namespace ds::rsm {
namespace {

// Every role of the core, so that each appears (0 or 1) in every scrape.
constexpr raft::Role kRoles[] = {raft::Role::kFollower, raft::Role::kPreCandidate,
                                 raft::Role::kCandidate, raft::Role::kLeader};
// Every shard state shardkv reports (shardkv::StateName), likewise.
constexpr const char* kShardStates[] = {"serving", "pulling", "handing-off", "gc-pending",
                                        "not-owned"};

// The gauges of one scrape. Node::GetStatus takes the Node's mutex only to
// copy the status (the Raft thread never holds it across a Save or a send);
// the session count is an atomic; status_extra is quick by contract.
void WriteGauges(common::ScrapeWriter& w, const std::string& service, uint64_t id,
                 const raft::Rsm& rsm, const SessionStateMachine& sm,
                 const ServiceOptions& options) {
  const raft::NodeStatus st = rsm.status();
  w.Gauge("dstack_replica_info", "Constant 1, labelled with this replica's service and id");
  w.Sample(1, {{"service", service}, {"id", absl::StrCat(id)}});
  w.Gauge("dstack_raft_term", "Current Raft term");
  w.Sample(static_cast<double>(st.term));
  w.Gauge("dstack_raft_role", "1 for this replica's current Raft role, 0 for the others");
  for (raft::Role role : kRoles) w.Sample(role == st.role ? 1 : 0, {{"role", RoleName(role)}});
  w.Gauge("dstack_raft_leader_id", "Id of the leader this replica knows (0: none)");
  w.Sample(static_cast<double>(st.leader));
  w.Gauge("dstack_raft_commit_index", "Highest log index known to be committed");
  w.Sample(static_cast<double>(st.commit));
  w.Gauge("dstack_raft_applied_index", "Highest log index applied to the state machine here");
  w.Sample(static_cast<double>(st.applied));
  w.Gauge("dstack_raft_last_log_index", "Index of the last entry in this replica's log");
  w.Sample(static_cast<double>(st.last_index));
  w.Gauge("dstack_raft_snapshot_index", "Last log index covered by the latest snapshot");
  w.Sample(static_cast<double>(st.snapshot_index));
  w.Gauge("dstack_raft_log_bytes", "Size of the persisted Raft log and hard state, in bytes");
  w.Sample(static_cast<double>(st.log_bytes));
  w.Gauge("dstack_raft_snapshot_bytes", "Size of the latest snapshot, in bytes");
  w.Sample(static_cast<double>(st.snapshot_bytes));
  w.Counter("dstack_raft_storage_saves_total", "Writes of Raft state to storage");
  w.Sample(static_cast<double>(st.saves));
  w.Counter("dstack_raft_storage_syncs_total",
            "Writes of Raft state that were fsync'd (group commit: many entries each)");
  w.Sample(static_cast<double>(st.synced_saves));
  w.Counter("dstack_raft_loop_iterations_total", "Iterations of the Raft thread's loop");
  w.Sample(static_cast<double>(st.loops));
  w.Gauge("dstack_sessions", "Client sessions in the session table (exactly-once state)");
  w.Sample(static_cast<double>(sm.session_count()));

  if (!options.status_extra) return;
  pb::StatusResponse extra;
  options.status_extra(&extra);
  if (extra.shards().empty() && extra.gid() == 0) return;
  std::map<std::string, int> by_state;
  uint64_t keys = 0;
  for (const pb::ShardStatus& s : extra.shards()) {
    ++by_state[s.state()];
    keys += s.keys();
  }
  w.Gauge("dstack_shardkv_config_num", "Number of the configuration this replica has applied");
  w.Sample(static_cast<double>(extra.config_num()));
  w.Gauge("dstack_shardkv_shards",
          "Shards by state in that configuration (serving, pulling: waiting for data, "
          "handing-off: lost and kept until the new owner has it, gc-pending, not-owned)");
  for (const char* state : kShardStates) w.Sample(by_state[state], {{"state", state}});
  w.Gauge("dstack_shardkv_keys", "Keys held by this replica, every shard together");
  w.Sample(static_cast<double>(keys));
}

}  // namespace

ReplicaMetrics::ReplicaMetrics(std::string service, uint64_t id)
    : service_(std::move(service)),
      id_(id),
      registry_(std::make_shared<prometheus::Registry>()),
      node_(raft::NodeMetrics::Register(*registry_)),
      requests_(*registry_, service_) {}

ReplicaMetrics::~ReplicaMetrics() { Stop(); }

absl::Status ReplicaMetrics::Serve(const std::string& listen, const raft::Rsm* rsm,
                                   const SessionStateMachine* sm, const ServiceOptions* service) {
  auto server = common::MetricsServer::Start(listen);
  if (!server.ok()) return server.status();
  server_ = std::move(*server);
  gauges_ = std::make_shared<common::ScrapeCollectable>(
      [this, rsm, sm, service](common::ScrapeWriter& w) {
        WriteGauges(w, service_, id_, *rsm, *sm, *service);
      });
  server_->Register(registry_);
  server_->Register(gauges_);
  return absl::OkStatus();
}

}  // namespace ds::rsm
