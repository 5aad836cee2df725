// A fake KV-Raft cluster for client tests: N replicas on 127.0.0.1 that share
// one state machine instead of running Raft. Each replica serves KvService
// (Get/Put/Append/Delete/Batch) and ds.rsm.pb.Replica (Status/Register) on one
// port, as kvraft-server does, and answers by the error contract of
// proto/rsm.proto: a replica that is not the leader refuses with UNAVAILABLE,
// ds-not-applied and (hints on) the leader's id and address; a write of a
// session the servers do not know is ABORTED with ds-session-watermark.
//
// The state machine is the production one (rsm::SessionStateMachine over
// kv::KvStateMachine), so exactly-once, session opening, expiry and the
// watermark behave exactly as on the real servers; the fake only decides who
// leads and injects faults.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/grpc_server.h"
#include "common/stream_registry.h"
#include "common/timer.h"
#include "kvraft/kv_state_machine.h"
#include "proto/kv.grpc.pb.h"
#include "raft/rsm/session_state_machine.h"

namespace ds::client::testing {

class FakeKvCluster {
 public:
  // `replicas` >= 1; replica 0 leads at first. Aborts on a set-up failure.
  explicit FakeKvCluster(int replicas);
  ~FakeKvCluster();
  FakeKvCluster(const FakeKvCluster&) = delete;
  FakeKvCluster& operator=(const FakeKvCluster&) = delete;

  int size() const { return static_cast<int>(servers_.size()); }
  std::vector<std::string> endpoints() const;
  std::string endpoints_flag() const;  // "H:P,H:P,..."

  // ---- Fault injection ----

  // Which replica leads; -1: none (every replica refuses, Status names no
  // leader).
  void set_leader(int replica) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether followers know the leader: in their refusals (ds-leader-id,
  // ds-leader-address) and in their Status. Default: on.
  void set_send_hints(bool on) ABSL_LOCKS_EXCLUDED(mu_);
  // The replica's next `calls` calls (KvService or Replica, Batch requests
  // included) are answered `delay` late, without holding a server thread.
  void set_slow(int replica, int calls, absl::Duration delay) ABSL_LOCKS_EXCLUDED(mu_);
  // The leader applies the next `writes` writes (or Registers) but answers
  // UNAVAILABLE without ds-not-applied, as a leader that lost leadership after
  // proposing does: the client cannot tell whether they were applied. With
  // `then_expire_sessions`, every session is forgotten right after each of
  // them (so that the client's retry finds its session gone).
  void LoseReplies(int writes, bool then_expire_sessions = false) ABSL_LOCKS_EXCLUDED(mu_);
  // Forgets every session, as the real servers do after --session-ttl of
  // idleness: the state machine's logical clock jumps past the TTL (a
  // sessionless no-op entry proposed a TTL from now). The watermark becomes
  // the newest creation time among them.
  void ExpireSessions() ABSL_LOCKS_EXCLUDED(mu_);
  // Waits up to `limit` until every call delayed by set_slow has been
  // answered (or handled, if its client gave up). False on timeout.
  bool WaitForDelayedCalls(absl::Duration limit) ABSL_LOCKS_EXCLUDED(mu_);

  // ---- Observations ----

  // KvService requests that reached replica `replica` (unary or on a stream).
  int kv_calls(int replica) const ABSL_LOCKS_EXCLUDED(mu_);
  // Replica.Status calls (leader probes, kvctl endpoint status).
  int status_calls(int replica) const ABSL_LOCKS_EXCLUDED(mu_);
  // Replica.Register calls (clerks open sessions with their first write).
  int register_calls(int replica) const ABSL_LOCKS_EXCLUDED(mu_);
  // Writes the KV state machine applied (each at most once per sequence
  // number: retries answered from a session's cache do not count).
  int applied_writes() const ABSL_LOCKS_EXCLUDED(mu_);
  // Distinct sessions that applied at least one write (or were registered).
  int sessions_used() const ABSL_LOCKS_EXCLUDED(mu_);
  // Entries applied through the "log" (writes, Registers, ExpireSessions'
  // no-op): what a real cluster would have replicated.
  uint64_t log_entries() const ABSL_LOCKS_EXCLUDED(mu_);
  // Sessions the servers know now (not expired).
  int64_t open_sessions() const ABSL_LOCKS_EXCLUDED(mu_);
  // The servers' session watermark (see rsm::SessionTable), Unix micros.
  int64_t session_watermark_unix_micros() const ABSL_LOCKS_EXCLUDED(mu_);
  // The current value of `key` ("" if missing).
  std::string value(const std::string& key) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  class KvFrontend;
  class ReplicaFrontend;
  friend class KvFrontend;
  friend class ReplicaFrontend;

  // Counts the commands the KV state machine applies, and their sessions.
  class CountingKv final : public rsm::Application {
   public:
    absl::StatusOr<std::string> Apply(std::string_view command,
                                      const rsm::ApplyContext& context) override;
    void SnapshotTo(std::string* out) const override { kv.SnapshotTo(out); }
    absl::Status Restore(std::string_view snapshot) override { return kv.Restore(snapshot); }

    kv::KvStateMachine kv;
    int applied = 0;
    absl::flat_hash_set<uint64_t> sessions;
  };

  enum class Call { kKv, kStatus, kRegister };
  // Counts the call; runs `fn` now, or later if replica `replica` is slow.
  void Dispatch(int replica, Call call, std::function<void()> fn) ABSL_LOCKS_EXCLUDED(mu_);
  // The one request path of unary calls and Batch streams.
  void HandleKv(int replica, kv::pb::KvRequest req, std::function<void(kv::pb::KvResponse)> done)
      ABSL_LOCKS_EXCLUDED(mu_);
  kv::pb::KvResponse ExecuteKv(int replica, kv::pb::KvRequest req) ABSL_LOCKS_EXCLUDED(mu_);
  // OK if `replica` leads; else the refusal (UNAVAILABLE, not applied, hint).
  bool RefuseUnlessLeader(int replica, rsm::pb::ReplyStatus* reply) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Appends `entry` to the "log": applies it at the next index.
  absl::StatusOr<std::string> ApplyLocked(const std::string& entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Lost reply: the leader's answer to a command it applied.
  void MaybeLoseReply(rsm::pb::ReplyStatus* reply) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireSessionsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FillStatus(int replica, rsm::pb::StatusResponse* resp) const ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  int leader_ ABSL_GUARDED_BY(mu_) = 0;
  bool send_hints_ ABSL_GUARDED_BY(mu_) = true;
  int lose_replies_ ABSL_GUARDED_BY(mu_) = 0;
  bool expire_after_lost_reply_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<int> slow_calls_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Duration> slow_delay_ ABSL_GUARDED_BY(mu_);
  std::vector<int> kv_calls_ ABSL_GUARDED_BY(mu_);
  std::vector<int> status_calls_ ABSL_GUARDED_BY(mu_);
  std::vector<int> register_calls_ ABSL_GUARDED_BY(mu_);
  int delayed_calls_ ABSL_GUARDED_BY(mu_) = 0;  // scheduled, not yet run
  CountingKv app_ ABSL_GUARDED_BY(mu_);
  rsm::SessionStateMachine sm_ ABSL_GUARDED_BY(mu_);
  uint64_t last_index_ ABSL_GUARDED_BY(mu_) = 0;  // the last "log" entry applied

  std::vector<std::string> addresses_;
  // Delayed answers of slow replicas. Declared before the servers, which are
  // shut down first: a shutdown waits for the calls the timer still holds.
  common::Timer timer_;
  common::StreamRegistry streams_;
  std::vector<std::unique_ptr<KvFrontend>> kv_services_;
  std::vector<std::unique_ptr<ReplicaFrontend>> replica_services_;
  std::vector<std::unique_ptr<common::GrpcServer>> servers_;
};

}  // namespace ds::client::testing
