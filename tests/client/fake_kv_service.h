// A fake KV-Raft cluster for client tests: N KvService replicas on loopback
// sharing one map. One replica is the leader; the others answer UNAVAILABLE
// with (optionally) the leader's address in the trailing metadata, as the real
// server does. Faults can be injected per replica.
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
  // The leader applies the next `n` writes but answers UNAVAILABLE (a lost reply).
  void set_lose_replies(int n);

  int calls(int replica) const;
  int applied_writes() const;
  std::string value(const std::string& key) const;

 private:
  class Replica;
  friend class Replica;

  mutable absl::Mutex mu_;
  int leader_ ABSL_GUARDED_BY(mu_) = 0;
  bool send_hints_ ABSL_GUARDED_BY(mu_) = true;
  int lose_replies_ ABSL_GUARDED_BY(mu_) = 0;
  int applied_writes_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, std::string> data_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, uint64_t> last_seq_ ABSL_GUARDED_BY(mu_);  // client -> last applied seq
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::vector<std::unique_ptr<common::GrpcServer>> servers_;
};

}  // namespace ds::client::testing
