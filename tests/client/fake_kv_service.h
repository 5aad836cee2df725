// A fake KV-Raft cluster for client tests: N KvService replicas on loopback
// sharing one map. One replica is the leader; the others answer UNAVAILABLE
// with (optionally) the leader's address in the trailing metadata, as the real
// server does. Like the real server, writes need a session opened by Register
// (FAILED_PRECONDITION otherwise) and are applied once per sequence number.
// Faults can be injected per replica.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/grpc_server.h"
#include "proto/kv.grpc.pb.h"

namespace ds::client::testing {

class FakeKvCluster {
 public:
  explicit FakeKvCluster(int replicas);
  ~FakeKvCluster();

  std::vector<std::string> endpoints() const;
  std::string endpoints_flag() const;  // "H:P,H:P,..."

  void set_leader(int replica);  // -1: no leader anywhere
  void set_send_hints(bool on);
  // The replica's next `n` calls sleep for `delay` before answering.
  void set_slow(int replica, int n, absl::Duration delay);
  // The leader applies the next `n` writes or registrations but answers
  // UNAVAILABLE (a lost reply).
  void set_lose_replies(int n);
  // Forgets every session, as the real servers do after --session-ttl.
  void ExpireSessions();

  int calls(int replica) const;
  int applied_writes() const;
  // Sessions opened by Register, lost replies included.
  int registrations() const;
  std::string value(const std::string& key) const;

 private:
  class Replica;
  friend class Replica;

  mutable absl::Mutex mu_;
  int leader_ ABSL_GUARDED_BY(mu_) = 0;
  bool send_hints_ ABSL_GUARDED_BY(mu_) = true;
  int lose_replies_ ABSL_GUARDED_BY(mu_) = 0;
  int applied_writes_ ABSL_GUARDED_BY(mu_) = 0;
  int registrations_ ABSL_GUARDED_BY(mu_) = 0;
  // Session ids, like the real ones log indexes: never reused, not 1, 2, 3...
  uint64_t next_client_id_ ABSL_GUARDED_BY(mu_) = 100;
  std::map<std::string, std::string> data_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, uint64_t> last_seq_ ABSL_GUARDED_BY(mu_);  // session -> last applied seq
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::vector<std::unique_ptr<common::GrpcServer>> servers_;
};

}  // namespace ds::client::testing
