// ReplicaMetrics: the /metrics of a replica daemon (--metrics-listen). One
// registry per replica, so several ReplicaServers in one process keep apart:
// the Node's counters and histograms (raft::NodeMetrics), request latencies
// by operation (common::RequestMetrics), and gauges read from the replica at
// scrape time (Raft term, role, indexes, log and snapshot sizes, sessions,
// shardkv's shard states) rather than updated on every event.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "common/metrics.h"
#include "raft/node/node.h"
#include "raft/rsm/rsm.h"
#include "raft/rsm/session_state_machine.h"
#include "raft/service/replica_service.h"

namespace ds::rsm {

class ReplicaMetrics {
 public:
  // `service`: "kvraft", ...; `id`: the replica's id (in dstack_replica_info).
  ReplicaMetrics(std::string service, uint64_t id);
  ~ReplicaMetrics();  // Stop()

  // For NodeOptions::metrics and ServiceOptions::request_metrics; they live as
  // long as this object.
  const raft::NodeMetrics* node() const { return &node_; }
  common::RequestMetrics* requests() { return &requests_; }

  // Serves the registry and the gauges of `rsm`, `sm` and `service` (its
  // status_extra, for shardkv's shards) at `listen`. They must stay valid
  // until Stop().
  absl::Status Serve(const std::string& listen, const raft::Rsm* rsm, const SessionStateMachine* sm,
                     const ServiceOptions* service);
  // The endpoint's bound port and address (after Serve); 0 / "" if none.
  int port() const { return server_ ? server_->port() : 0; }
  std::string address() const { return server_ ? server_->address() : ""; }

  // Stops the endpoint; once it returns no scrape reads the replica any more.
  // Idempotent.
  void Stop() { server_.reset(); }

 private:
  const std::string service_;
  const uint64_t id_;
  const std::shared_ptr<prometheus::Registry> registry_;
  const raft::NodeMetrics node_;
  common::RequestMetrics requests_;
  std::shared_ptr<common::ScrapeCollectable> gauges_;
  std::unique_ptr<common::MetricsServer> server_;
};

}  // namespace ds::rsm
