// The sharded KV service's clients. A key belongs to shard KeyToShard(key)
// (shardkv/key_shard.h) and its shard to a replica group in the controller's
// configuration; the client caches the configuration, sends each operation
// to its key's group (on the one client engine: leader search, hints,
// retries), and re-reads the configuration when a group answers "wrong
// group" (FAILED_PRECONDITION) or cannot be reached, then sends the same
// command, with the same session reference, to the group that owns the
// shard now. One client session across all groups: a command acknowledged
// by one group and retried at another after its shard moved is not applied
// twice (the session moves with the shard).
//
// - ShardedKvClient: asynchronous, over any transports (one operation at a
//   time per client).
// - ShardKvClerk: blocking, over unary gRPC calls; what kvctl uses.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "client/clerk.h"
#include "client/ctrl_client.h"
#include "client/kv_client.h"
#include "client/replica_client.h"

namespace ds::client {

// Where a key lives in a configuration.
struct Location {
  uint32_t shard = 0;
  uint64_t gid = 0;  // 0: unassigned
  std::vector<std::string> servers;
  uint64_t config_num = 0;
};

class ShardedKvClient : public KvOperations<ShardedKvClient> {
 public:
  // The transport to the group with these servers; called once per server
  // list, the pointer must stay valid for the client's life.
  using GroupTransportFn = std::function<KvTransport*(const std::vector<std::string>& servers)>;

  // `ctrl` (the controller's client; its reads may be shared by many
  // clients) and `timer` (for pauses between configuration reads) must
  // outlive the client.
  ShardedKvClient(CtrlClient* ctrl, ReplicaTransport* timer, GroupTransportFn groups,
                  RetryOptions options, SessionState resume = {});

  // Get, Put, Append and Delete: KvOperations.
  // Where `key` lives in the latest configuration (read now).
  void Locate(std::string key, std::function<void(absl::StatusOr<Location>)> done);

  SessionState session() const { return session_.state(); }

 private:
  friend class KvOperations<ShardedKvClient>;
  friend class ShardedKvCall;
  struct Group {
    KvTransport* transport;
    std::shared_ptr<LeaderCache> leader;
  };
  void Run(const char* name, kv::pb::KvRequest request, bool write, ResponseCallback done);
  // Reads the latest configuration; `then` once it is cached (or failed).
  void Refresh(std::function<void(absl::Status)> then);
  // The group serving `key` in the cached configuration; kNotFound if there
  // is no configuration yet or the shard is unassigned.
  absl::StatusOr<Location> Where(std::string_view key) const ABSL_LOCKS_EXCLUDED(mu_);
  Group GroupFor(const std::vector<std::string>& servers) ABSL_LOCKS_EXCLUDED(mu_);

  CtrlClient* const ctrl_;
  ReplicaTransport* const timer_;
  const GroupTransportFn make_group_;
  const RetryOptions options_;
  ClientSession session_;
  mutable absl::Mutex mu_;
  ctrl::pb::Config config_ ABSL_GUARDED_BY(mu_);  // num 0: none yet
  std::map<std::vector<std::string>, Group> groups_ ABSL_GUARDED_BY(mu_);
};

class ShardKvClerk {
 public:
  // options.endpoints: the shard controller's replicas.
  static absl::StatusOr<std::unique_ptr<ShardKvClerk>> Create(ClerkOptions options);
  ~ShardKvClerk();

  absl::StatusOr<GetResult> Get(const std::string& key);
  absl::Status Put(const std::string& key, const std::string& value);
  absl::Status Append(const std::string& key, const std::string& value);
  absl::StatusOr<bool> Delete(const std::string& key);
  absl::StatusOr<Location> Locate(const std::string& key);

  SessionState session() const { return client_->session(); }

 private:
  explicit ShardKvClerk(ClerkOptions options);

  const ClerkOptions options_;
  std::unique_ptr<GrpcCtrlTransport> ctrl_transport_;
  std::unique_ptr<CtrlClient> ctrl_;
  absl::Mutex groups_mu_;
  std::map<std::vector<std::string>, std::unique_ptr<GrpcKvTransport>> groups_
      ABSL_GUARDED_BY(groups_mu_);
  std::unique_ptr<ShardedKvClient> client_;
  OneOperationAtATime turns_;  // one operation at a time
};

}  // namespace ds::client
