// Transport: moves Raft messages between the replicas of one group.
//
// The Raft thread hands every outgoing message to Send() and must never wait
// for the network: Send() only queues. Delivery is best effort, like the
// network Raft assumes (§5.1: messages may be lost; the leader retransmits), so
// a message that cannot be queued or sent is dropped and reported back to the
// core as a local message:
//   - MSG_UNREACHABLE {from: peer}: the peer's queue was full or a send failed
//     (the leader slows down replication to it: probe state);
//   - MSG_SNAP_STATUS {from: peer, reject: failed}: the outcome of a snapshot
//     transfer (MSG_SNAP messages are streamed in chunks on their own path, so a
//     multi-MiB snapshot never delays heartbeats).
// Incoming messages and these reports both go to the one handler given to
// Start(); the handler must not block (the Node just queues them).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "proto/raft.pb.h"

namespace ds::raft {

class Transport {
 public:
  using Handler = std::function<void(pb::Message)>;

  virtual ~Transport() = default;

  // Starts delivering incoming messages and reports to `handler`.
  virtual void Start(Handler handler) = 0;
  // Queues each message for its peer (message.to). Never blocks.
  virtual void Send(std::vector<pb::Message> messages) = 0;
  // Members' addresses from the Raft configuration (id -> HOST:PORT, without
  // us), called from the thread that calls Send() whenever the configuration
  // changes: a transport starts talking to members it did not know. Peers it
  // knows keep their connections. Default: ignored (tests' transports).
  virtual void UpdatePeers(const std::map<uint64_t, std::string>& peers) {}
  // Stops the senders and the delivery of incoming messages; when it returns,
  // the handler is not running and will not be called again. Idempotent.
  virtual void Stop() = 0;
};

}  // namespace ds::raft
