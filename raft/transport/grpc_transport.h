// GrpcTransport: the Transport over RaftService (proto/raft.proto).
//
// Client side: one channel per peer and one long-lived Stream call on it
// (gRPC's callback API: no thread of ours waits on it). Send() writes from the
// caller's thread when the stream is idle; messages queued while a write is in
// flight go out together as the next MessageBatch, so a busy leader sends few,
// large messages without a thread hand-off. A second thread per peer streams
// snapshots in chunks. gRPC reconnects channels by itself; a broken stream
// loses its message in flight, reports the peer unreachable, and the next
// Send() opens a new stream. Send() must not be called from two threads at
// once (the Node calls it from its Raft thread).
//
// Server side: service() is the RaftService implementation; add it to the
// daemon's gRPC server (common/grpc_server.h). Shut that server down before
// destroying the transport.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/security/credentials.h"
#include "proto/raft.grpc.pb.h"
#include "raft/transport/transport.h"

namespace ds::raft {

struct GrpcTransportOptions {
  // Our replica id: the `to` of reports we generate. Required.
  uint64_t id = 0;
  // Every other replica: id -> "host:port" of its RaftService. Required.
  std::map<uint64_t, std::string> peers;
  // Messages waiting for one peer beyond which new ones are dropped (and the
  // peer reported unreachable). Unit: messages. Default: 4096.
  size_t max_queued_messages = 4096;
  // Bytes of queued messages per peer beyond which new ones are dropped.
  // Unit: bytes. Default: 64 MiB.
  uint64_t max_queued_bytes = 64ull << 20;
  // Upper bound on one MessageBatch; a larger backlog goes out in several
  // calls. Must stay below the receiver's gRPC max message size (64 MiB in
  // GrpcServer). Unit: bytes. Default: 8 MiB.
  uint64_t max_batch_bytes = 8ull << 20;
  // Size of one InstallSnapshot chunk. Unit: bytes. Default: 1 MiB.
  uint64_t snapshot_chunk_bytes = 1ull << 20;
  // A write to a peer's stream that has not completed after this long (a
  // peer that stopped reading, or a dead connection) makes the next Send()
  // cancel the stream and start a new one. Raft retransmits what was lost.
  // Default: 2 s.
  absl::Duration send_timeout = absl::Seconds(2);
  // Deadline of a whole snapshot transfer. Default: 60 s.
  absl::Duration snapshot_timeout = absl::Seconds(60);
  // gRPC reconnect backoff ceiling: how long a restarted peer may wait until
  // we try its address again. Default: 1 s.
  absl::Duration max_reconnect_backoff = absl::Seconds(1);
  // TLS of the connections to peers (common/tls.h). Null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Decides whether an incoming Stream or InstallSnapshot call may speak for
  // a peer (common::PeerCertificateCheck when Raft shares the client port
  // under TLS); a non-OK status refuses the call with it. Null: all may.
  std::function<grpc::Status(const grpc::ServerContextBase&)> authorize;
  // Metadata sent with every outgoing Stream and InstallSnapshot call to
  // `peer` (the replica server's identity, and what it knows of the peer's),
  // which the peers' `authorize` may check. Called when a call starts.
  // Default: none.
  std::function<std::vector<std::pair<std::string, std::string>>(uint64_t peer)> call_metadata;
  // Called (on a gRPC thread; must be quick) when a peer refuses our call
  // with FAILED_PRECONDITION or PERMISSION_DENIED: the peer's message says
  // why. Default: none.
  std::function<void(uint64_t peer, const grpc::Status& status)> on_refused;
};

class GrpcTransport : public Transport {
 public:
  explicit GrpcTransport(GrpcTransportOptions options);
  ~GrpcTransport() override;  // Stop()
  GrpcTransport(const GrpcTransport&) = delete;
  GrpcTransport& operator=(const GrpcTransport&) = delete;

  void Start(Handler handler) override;
  void Send(std::vector<pb::Message> messages) override;
  // Opens connections to members it did not know (the Node calls it from its
  // Raft thread, the thread that calls Send()).
  void UpdatePeers(const std::map<uint64_t, std::string>& peers) override;
  void Stop() override;

  // The address of a peer ("" if unknown).
  std::string PeerAddress(uint64_t id) const;

  // The server half; must outlive the gRPC server it is added to.
  grpc::Service* service();
  // Ends the peers' streams into service() (and refuses new ones), so that a
  // graceful server shutdown need not wait for them. Call just before
  // shutting the server down.
  void CloseInboundStreams();

  // Counters for tests and benchmarks.
  uint64_t send_calls() const;
  uint64_t dropped_messages() const;

 private:
  class Service;
  class StreamReactor;
  class InboundStream;
  struct Peer;

  void OnWriteDone(Peer* peer, StreamReactor* stream, bool ok);
  void OnStreamDone(Peer* peer, StreamReactor* stream, const grpc::Status& status);
  void SnapshotLoop(Peer* peer);
  void StreamSnapshot(Peer* peer, pb::Message msg);
  // Hands `msg` to the handler unless stopped; never under a lock.
  void Deliver(pb::Message msg);
  grpc::Status Authorize(const grpc::ServerContextBase& ctx) const {
    return options_.authorize ? options_.authorize(ctx) : grpc::Status::OK;
  }
  void Report(pb::MessageType type, uint64_t peer, bool reject);
  void NoteRefusal(uint64_t peer, const grpc::Status& status);
  Peer* AddPeerLocked(uint64_t id, const std::string& address)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(peers_mu_);
  std::vector<Peer*> PeerList() const;

  const GrpcTransportOptions options_;
  std::unique_ptr<Service> service_;
  // Peers are added (by the constructor and UpdatePeers) under peers_mu_ and
  // never removed. Send() reads the map without the lock: it runs on the one
  // thread that calls UpdatePeers. Every other reader takes the lock.
  mutable absl::Mutex peers_mu_;
  std::map<uint64_t, std::unique_ptr<Peer>> peers_;
  bool started_ ABSL_GUARDED_BY(peers_mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(peers_mu_) = false;

  mutable absl::Mutex mu_;
  Handler handler_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  // Handler invocations in progress (Stop waits for them to finish).
  int delivering_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t send_calls_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ds::raft
