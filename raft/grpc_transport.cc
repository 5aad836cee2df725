#include "raft/grpc_transport.h"

#include <algorithm>
#include <utility>

#include "grpcpp/grpcpp.h"

namespace ds::raft {

struct GrpcTransport::Peer {
  uint64_t id = 0;
  std::unique_ptr<pb::RaftService::Stub> stub;

  absl::Mutex mu;
  std::deque<pb::Message> queue ABSL_GUARDED_BY(mu);
  uint64_t queued_bytes ABSL_GUARDED_BY(mu) = 0;
  std::deque<pb::Message> snapshots ABSL_GUARDED_BY(mu);
  bool stop ABSL_GUARDED_BY(mu) = false;
  // Calls in flight, so Stop() can cancel them instead of waiting out deadlines.
  grpc::ClientContext* send_ctx ABSL_GUARDED_BY(mu) = nullptr;
  grpc::ClientContext* snapshot_ctx ABSL_GUARDED_BY(mu) = nullptr;

  std::thread sender;
  std::thread snapshotter;
};

class GrpcTransport::Service final : public pb::RaftService::Service {
 public:
  explicit Service(GrpcTransport* transport) : transport_(transport) {}

  grpc::Status Send(grpc::ServerContext*, const pb::MessageBatch* batch, pb::SendAck*) override {
    for (const pb::Message& m : batch->messages()) transport_->Deliver(m);
    return grpc::Status::OK;
  }

  // Reassembles the chunks; the message reaches the core only once complete,
  // so a broken stream never installs a partial snapshot.
  grpc::Status InstallSnapshot(grpc::ServerContext*, grpc::ServerReader<pb::SnapshotChunk>* reader,
                               pb::SendAck*) override {
    pb::SnapshotChunk chunk;
    pb::Message msg;
    bool have_header = false;
    bool done = false;
    std::string data;
    while (!done && reader->Read(&chunk)) {
      if (!have_header) {
        msg = std::move(*chunk.mutable_header());
        have_header = true;
      }
      data.append(chunk.data());
      done = chunk.done();
    }
    if (!have_header || !done || msg.type() != pb::MSG_SNAP) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "incomplete snapshot stream");
    }
    msg.mutable_snapshot()->set_data(std::move(data));
    transport_->Deliver(std::move(msg));
    return grpc::Status::OK;
  }

 private:
  GrpcTransport* const transport_;
};

GrpcTransport::GrpcTransport(GrpcTransportOptions options)
    : options_(std::move(options)), service_(std::make_unique<Service>(this)) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(-1);
  args.SetMaxReceiveMessageSize(-1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options_.max_reconnect_backoff)));
  for (const auto& [id, address] : options_.peers) {
    if (id == options_.id) continue;
    auto peer = std::make_unique<Peer>();
    peer->id = id;
    // A channel per peer (not a shared subchannel pool entry), so one slow
    // peer's connection never queues behind another's.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    peer->stub = pb::RaftService::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
    peers_[id] = std::move(peer);
  }
}

GrpcTransport::~GrpcTransport() { Stop(); }

grpc::Service* GrpcTransport::service() { return service_.get(); }

void GrpcTransport::Start(Handler handler) {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_ || handler_) return;
    handler_ = std::move(handler);
  }
  for (auto& [id, peer] : peers_) {
    Peer* p = peer.get();
    p->sender = std::thread([this, p] { SenderLoop(p); });
    p->snapshotter = std::thread([this, p] { SnapshotLoop(p); });
  }
}

void GrpcTransport::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
    // After this no handler call is running, and none will start.
    mu_.Await(absl::Condition(
        +[](int* n) { return *n == 0; }, &delivering_));
  }
  for (auto& [id, peer] : peers_) {
    {
      absl::MutexLock lock(&peer->mu);
      peer->stop = true;
      if (peer->send_ctx != nullptr) peer->send_ctx->TryCancel();
      if (peer->snapshot_ctx != nullptr) peer->snapshot_ctx->TryCancel();
    }
    if (peer->sender.joinable()) peer->sender.join();
    if (peer->snapshotter.joinable()) peer->snapshotter.join();
  }
}

void GrpcTransport::Send(std::vector<pb::Message> messages) {
  for (pb::Message& m : messages) {
    auto it = peers_.find(m.to());
    if (it == peers_.end()) {
      Report(pb::MSG_UNREACHABLE, m.to(), false);
      continue;
    }
    Peer* peer = it->second.get();
    bool dropped = false;
    bool snapshot_dropped = false;
    {
      absl::MutexLock lock(&peer->mu);
      if (peer->stop) return;
      if (m.type() == pb::MSG_SNAP) {
        // One transfer at a time per peer; the leader sends another MsgSnap
        // only after the previous one was reported.
        if (peer->snapshots.size() >= 2) {
          snapshot_dropped = true;
        } else {
          peer->snapshots.push_back(std::move(m));
        }
      } else {
        const uint64_t bytes = m.ByteSizeLong();
        if (peer->queue.size() >= options_.max_queued_messages ||
            peer->queued_bytes + bytes > options_.max_queued_bytes) {
          dropped = true;
        } else {
          peer->queued_bytes += bytes;
          peer->queue.push_back(std::move(m));
        }
      }
    }
    if (dropped || snapshot_dropped) {
      {
        absl::MutexLock lock(&mu_);
        ++dropped_;
      }
      Report(snapshot_dropped ? pb::MSG_SNAP_STATUS : pb::MSG_UNREACHABLE, it->first,
             /*reject=*/true);
    }
  }
}

void GrpcTransport::SenderLoop(Peer* peer) {
  for (;;) {
    pb::MessageBatch batch;
    {
      absl::MutexLock lock(&peer->mu);
      peer->mu.Await(absl::Condition(
          +[](Peer* p)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu) { return p->stop || !p->queue.empty(); },
          peer));
      if (peer->stop) return;
      // Everything queued since the last call goes in one RPC (up to the cap).
      uint64_t bytes = 0;
      while (!peer->queue.empty()) {
        const uint64_t size = peer->queue.front().ByteSizeLong();
        if (batch.messages_size() > 0 && bytes + size > options_.max_batch_bytes) break;
        bytes += size;
        peer->queued_bytes -= size;
        *batch.add_messages() = std::move(peer->queue.front());
        peer->queue.pop_front();
      }
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.send_timeout));
    {
      absl::MutexLock lock(&peer->mu);
      if (peer->stop) return;
      peer->send_ctx = &ctx;
    }
    pb::SendAck ack;
    grpc::Status status = peer->stub->Send(&ctx, batch, &ack);
    {
      absl::MutexLock lock(&peer->mu);
      peer->send_ctx = nullptr;
    }
    {
      absl::MutexLock lock(&mu_);
      ++send_calls_;
      if (!status.ok()) dropped_ += batch.messages_size();
    }
    if (!status.ok()) Report(pb::MSG_UNREACHABLE, peer->id, false);
  }
}

void GrpcTransport::SnapshotLoop(Peer* peer) {
  for (;;) {
    pb::Message msg;
    {
      absl::MutexLock lock(&peer->mu);
      peer->mu.Await(absl::Condition(
          +[](Peer* p)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu) { return p->stop || !p->snapshots.empty(); },
          peer));
      if (peer->stop) return;
      msg = std::move(peer->snapshots.front());
      peer->snapshots.pop_front();
    }
    StreamSnapshot(peer, std::move(msg));
  }
}

void GrpcTransport::StreamSnapshot(Peer* peer, pb::Message msg) {
  std::string data = std::move(*msg.mutable_snapshot()->mutable_data());
  msg.mutable_snapshot()->clear_data();
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.snapshot_timeout));
  {
    absl::MutexLock lock(&peer->mu);
    if (peer->stop) return;
    peer->snapshot_ctx = &ctx;
  }
  pb::SendAck ack;
  std::unique_ptr<grpc::ClientWriter<pb::SnapshotChunk>> writer =
      peer->stub->InstallSnapshot(&ctx, &ack);
  const uint64_t chunk_bytes = std::max<uint64_t>(1, options_.snapshot_chunk_bytes);
  uint64_t offset = 0;
  bool ok = true;
  do {
    pb::SnapshotChunk chunk;
    if (offset == 0) *chunk.mutable_header() = msg;
    const uint64_t n = std::min<uint64_t>(chunk_bytes, data.size() - offset);
    chunk.set_data(data.substr(offset, n));
    offset += n;
    chunk.set_done(offset == data.size());
    ok = writer->Write(chunk);
  } while (ok && offset < data.size());
  if (ok) ok = writer->WritesDone();
  grpc::Status status = writer->Finish();
  {
    absl::MutexLock lock(&peer->mu);
    peer->snapshot_ctx = nullptr;
  }
  Report(pb::MSG_SNAP_STATUS, peer->id, /*reject=*/!(ok && status.ok()));
}

void GrpcTransport::Deliver(pb::Message msg) {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_ || !handler_) return;
    ++delivering_;
  }
  // handler_ is only written by Start() (before any delivery) and read here
  // while delivering_ > 0 keeps Stop() from returning.
  handler_(std::move(msg));
  absl::MutexLock lock(&mu_);
  --delivering_;
}

void GrpcTransport::Report(pb::MessageType type, uint64_t peer, bool reject) {
  pb::Message m;
  m.set_type(type);
  m.set_from(peer);
  m.set_to(options_.id);
  m.set_reject(reject);
  Deliver(std::move(m));
}

uint64_t GrpcTransport::send_calls() const {
  absl::MutexLock lock(&mu_);
  return send_calls_;
}

uint64_t GrpcTransport::dropped_messages() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

}  // namespace ds::raft
