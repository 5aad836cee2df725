// ShardKvDriver: what a shardkv replica does on its own, while it is its
// group's leader (one thread per replica, one pass every poll interval):
//   - garbage collection: for each shard gained in the current configuration
//     whose previous owner still keeps a copy (gc-pending), ask that group to
//     delete it, then record the hand-off as complete (HandoffDone);
//   - migration: for each shard it is waiting for (pulling), pull the data
//     from the previous owner in chunks and install it through the log
//     (InstallChunk..., InstallDone), resuming after what is already staged;
//   - reconfiguration: once every shard has finished the current change, ask
//     the controller for the latest number and, if it is higher, propose the
//     next configuration (ConfigCommand), one number at a time;
//   - server list: once a membership change of its own group is committed,
//     make the controller list the group's voters' client addresses (in id
//     order) instead of the old ones, so that clients and other groups find
//     the new replicas (DriverOptions::member_address).
// Everything it proposes is checked again when applied, so a driver on a
// replica that just lost leadership, or two drivers at once, do no harm.
// No lock is held across a call to another group, the controller or Raft.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "proto/shardctrler.pb.h"
#include "raft/rsm/rsm.h"
#include "shardkv/migration_client.h"
#include "shardkv/shardkv_state_machine.h"
#include "spdlog/spdlog.h"

namespace ds::shardkv {

// Where the driver gets configurations: the shard controller.
class ConfigSource {
 public:
  virtual ~ConfigSource() = default;
  virtual absl::StatusOr<uint64_t> Latest() = 0;
  virtual absl::StatusOr<ctrl::pb::Config> Query(uint64_t num) = 0;
  // Replaces the servers of group `gid` in the controller's latest
  // configuration (ShardCtrler.Servers): the number of the configuration
  // that lists them.
  virtual absl::StatusOr<uint64_t> Servers(uint64_t gid, std::vector<std::string> servers) = 0;
};

struct DriverOptions {
  // How often the leader looks for a new configuration and for shards to
  // pull or release. Default: 100 ms (6.824's).
  absl::Duration poll_interval = absl::Milliseconds(100);
  // Bytes of keys and values per pulled chunk (one log entry each). Default:
  // 1 MiB.
  uint64_t chunk_bytes = 1 << 20;
  // Longest the driver waits for one of its proposals to apply. Default: 5 s.
  absl::Duration propose_timeout = absl::Seconds(5);
  // The client address ("host:port", what a configuration lists) of member
  // `id` of this group's Raft configuration; "" if unknown. Called on the
  // driver's thread. When set, the leader keeps the controller's server list
  // of its group equal to its voters' addresses once its configuration is
  // committed: when the two differ as sets it sends the voters' addresses in
  // id order (a list in another order, as joined, is left alone); while any
  // voter's address is unknown it leaves the list alone. Null (default):
  // never.
  std::function<std::string(uint64_t id)> member_address;
  // After a failed Servers call with an unchanged membership, how long
  // before the driver tries again (it also stops when its group is not in
  // the configuration it has applied). Default: 1 s.
  absl::Duration servers_retry_interval = absl::Seconds(1);
};

class ShardKvDriver {
 public:
  // Everything must outlive the driver.
  ShardKvDriver(DriverOptions options, raft::Rsm* rsm, const ShardKvStateMachine* sm,
                ConfigSource* controller, PeerGroups* groups,
                std::shared_ptr<spdlog::logger> logger);
  ~ShardKvDriver();  // Stop()

  void Start();
  // Joins the thread (a pass in progress finishes its current call first).
  void Stop();

  // One pass, for tests that drive it by hand. Returns whether it proposed
  // anything.
  bool Step();

 private:
  void Loop();
  absl::Status Propose(const pb::ShardKvCommand& cmd);
  bool IsLeader() const;
  // The servers of the group that owned `shard` in the previous configuration.
  static std::vector<std::string> PreviousOwnerServers(const ShardKvStateMachine::View& v,
                                                       uint32_t shard);
  bool Release(const ShardKvStateMachine::View& v, uint32_t shard);
  bool PullShard(const ShardKvStateMachine::View& v, uint32_t shard);
  bool Reconfigure(const ShardKvStateMachine::View& v);
  // The voters' client addresses in id order, if the configuration is
  // committed and every address is known.
  std::optional<std::vector<std::string>> MemberServers() const;
  void UpdateServers(const ShardKvStateMachine::View& v);

  const DriverOptions options_;
  raft::Rsm* const rsm_;
  const ShardKvStateMachine* const sm_;
  ConfigSource* const controller_;
  PeerGroups* const groups_;
  const std::shared_ptr<spdlog::logger> log_;
  absl::Notification stop_;
  std::thread thread_;

  // The last server list sent to the controller (the pass's thread only:
  // Step() is never run by two threads at once), so that the leader sends a
  // list once, not every pass until its group applies the configuration the
  // call made.
  struct SentServers {
    std::vector<std::string> servers;
    bool ok = false;
    uint64_t num = 0;     // ok: the configuration that lists `servers`
    absl::Time retry_at;  // !ok: when to try again
  };
  SentServers sent_servers_;
};

}  // namespace ds::shardkv
