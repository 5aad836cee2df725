#include "raft/transport/grpc_transport.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "common/stream_registry.h"
#include "grpcpp/grpcpp.h"

namespace ds::raft {

// One outgoing Stream call to a peer. Holds a reaction hold from Begin()
// until the stream is known dead (a failed write, or a cancel while idle), so
// that gRPC never calls OnDone while Send() may still start a write.
class GrpcTransport::StreamReactor final : public grpc::ClientWriteReactor<pb::MessageBatch> {
 public:
  StreamReactor(GrpcTransport* transport, Peer* peer) : transport_(transport), peer_(peer) {}

  void Begin(pb::RaftService::Stub* stub);
  void OnWriteDone(bool ok) override { transport_->OnWriteDone(peer_, this, ok); }
  void OnDone(const grpc::Status& status) override {
    transport_->OnStreamDone(peer_, this, status);
  }

  grpc::ClientContext ctx_;
  pb::SendAck ack_;
  // The message being written; only touched by whoever set `writing`.
  pb::MessageBatch sending_;
  // Guarded by the peer's mu:
  bool writing = false;
  absl::Time write_started;
  bool hold_released = false;
  bool done = false;

 private:
  GrpcTransport* const transport_;
  Peer* const peer_;
};

struct GrpcTransport::Peer {
  uint64_t id = 0;
  std::string address;
  std::unique_ptr<pb::RaftService::Stub> stub;

  absl::Mutex mu;
  std::deque<pb::Message> queue ABSL_GUARDED_BY(mu);
  uint64_t queued_bytes ABSL_GUARDED_BY(mu) = 0;
  std::deque<pb::Message> snapshots ABSL_GUARDED_BY(mu);
  bool stop ABSL_GUARDED_BY(mu) = false;
  // The open stream, if any, and every stream not yet deleted. Streams are
  // deleted only by Send() (once done) and the destructor, never concurrently.
  StreamReactor* stream ABSL_GUARDED_BY(mu) = nullptr;
  std::vector<std::unique_ptr<StreamReactor>> streams ABSL_GUARDED_BY(mu);
  int live_streams ABSL_GUARDED_BY(mu) = 0;
  // The snapshot call in flight, so Stop() can cancel it.
  grpc::ClientContext* snapshot_ctx ABSL_GUARDED_BY(mu) = nullptr;

  std::thread snapshotter;
};

void GrpcTransport::StreamReactor::Begin(pb::RaftService::Stub* stub) {
  if (transport_->options_.call_metadata) {
    for (const auto& [key, value] : transport_->options_.call_metadata(peer_->id)) {
      ctx_.AddMetadata(key, value);
    }
  }
  stub->async()->Stream(&ctx_, &ack_, this);
  AddHold();
  StartWrite(&sending_);
  StartCall();
}

// Takes up to `max_bytes` (at least one message) from `queue` into `batch`.
static void TakeBatch(std::deque<pb::Message>& queue, uint64_t& queued_bytes, uint64_t max_bytes,
                      pb::MessageBatch* batch) {
  batch->Clear();
  uint64_t bytes = 0;
  while (!queue.empty()) {
    const uint64_t size = queue.front().ByteSizeLong();
    if (batch->messages_size() > 0 && bytes + size > max_bytes) break;
    bytes += size;
    queued_bytes -= size;
    *batch->add_messages() = std::move(queue.front());
    queue.pop_front();
  }
}

// The receiving end of a peer's Stream: every message goes to the handler as
// it is read. Owns itself (self_) until gRPC is done with it, so the
// shutdown path (Close) can hold a reference.
class GrpcTransport::InboundStream final : public grpc::ServerReadReactor<pb::MessageBatch>,
                                           public common::ClosableStream {
 public:
  static InboundStream* Open(GrpcTransport* transport, common::StreamRegistry* registry) {
    std::shared_ptr<InboundStream> s(new InboundStream(transport));
    s->self_ = s;
    s->StartRead(&s->in_);
    registry->Add(s);
    return s.get();
  }
  void OnReadDone(bool ok) override {
    if (!ok) {
      FinishOnce(grpc::Status::OK);
      return;
    }
    for (pb::Message& m : *in_.mutable_messages()) transport_->Deliver(std::move(m));
    in_.Clear();
    StartRead(&in_);
  }
  void Close() override {
    FinishOnce(grpc::Status(grpc::StatusCode::UNAVAILABLE, "replica shutting down"));
  }
  void OnDone() override {
    std::shared_ptr<InboundStream> last = std::move(self_);  // may delete this on return
  }

 private:
  explicit InboundStream(GrpcTransport* transport) : transport_(transport) {}
  void FinishOnce(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
    }
    Finish(status);
  }

  GrpcTransport* const transport_;
  pb::MessageBatch in_;
  std::shared_ptr<InboundStream> self_;
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

class GrpcTransport::Service final
    : public pb::RaftService::WithCallbackMethod_Stream<pb::RaftService::Service> {
 public:
  explicit Service(GrpcTransport* transport) : transport_(transport) {}

  grpc::ServerReadReactor<pb::MessageBatch>* Stream(grpc::CallbackServerContext* ctx,
                                                    pb::SendAck*) override {
    if (grpc::Status st = transport_->Authorize(*ctx); !st.ok()) return new Refused(st);
    return InboundStream::Open(transport_, &streams_);
  }

  void CloseStreams() { streams_.CloseAll(); }

  // Reassembles the chunks; the message reaches the core only once complete,
  // so a broken stream never installs a partial snapshot.
  grpc::Status InstallSnapshot(grpc::ServerContext* ctx,
                               grpc::ServerReader<pb::SnapshotChunk>* reader,
                               pb::SendAck*) override {
    if (grpc::Status st = transport_->Authorize(*ctx); !st.ok()) return st;
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
  // A Stream call refused before reading anything.
  class Refused final : public grpc::ServerReadReactor<pb::MessageBatch> {
   public:
    explicit Refused(const grpc::Status& status) { Finish(status); }
    void OnDone() override { delete this; }
  };

  GrpcTransport* const transport_;
  common::StreamRegistry streams_;
};

GrpcTransport::GrpcTransport(GrpcTransportOptions options)
    : options_(std::move(options)), service_(std::make_unique<Service>(this)) {
  absl::MutexLock lock(&peers_mu_);
  for (const auto& [id, address] : options_.peers) {
    if (id != options_.id) AddPeerLocked(id, address);
  }
}

GrpcTransport::Peer* GrpcTransport::AddPeerLocked(uint64_t id, const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(-1);
  args.SetMaxReceiveMessageSize(-1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options_.max_reconnect_backoff)));
  // The stream is long-lived: find a dead connection even while idle.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  // A channel per peer (not a shared subchannel pool entry), so one slow
  // peer's connection never queues behind another's.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto peer = std::make_unique<Peer>();
  peer->id = id;
  peer->address = address;
  peer->stub = pb::RaftService::NewStub(grpc::CreateCustomChannel(
      address,
      options_.credentials != nullptr ? options_.credentials : grpc::InsecureChannelCredentials(),
      args));
  Peer* p = peer.get();
  peers_[id] = std::move(peer);
  return p;
}

std::string GrpcTransport::PeerAddress(uint64_t id) const {
  absl::MutexLock lock(&peers_mu_);
  auto it = peers_.find(id);
  return it == peers_.end() ? std::string() : it->second->address;
}

void GrpcTransport::UpdatePeers(const std::map<uint64_t, std::string>& peers) {
  std::vector<Peer*> start;
  {
    absl::MutexLock lock(&peers_mu_);
    for (const auto& [id, address] : peers) {
      if (id == options_.id) continue;
      auto it = peers_.find(id);
      if (it != peers_.end()) continue;  // known: keep its connection
      Peer* p = AddPeerLocked(id, address);
      if (started_ && !stopping_) start.push_back(p);
    }
    for (Peer* p : start) p->snapshotter = std::thread([this, p] { SnapshotLoop(p); });
  }
}

std::vector<GrpcTransport::Peer*> GrpcTransport::PeerList() const {
  absl::MutexLock lock(&peers_mu_);
  std::vector<Peer*> out;
  for (const auto& [id, peer] : peers_) out.push_back(peer.get());
  return out;
}

GrpcTransport::~GrpcTransport() { Stop(); }

grpc::Service* GrpcTransport::service() { return service_.get(); }

void GrpcTransport::CloseInboundStreams() { service_->CloseStreams(); }

void GrpcTransport::Start(Handler handler) {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_ || handler_) return;
    handler_ = std::move(handler);
  }
  absl::MutexLock lock(&peers_mu_);
  started_ = true;
  for (auto& [id, peer] : peers_) {
    Peer* p = peer.get();
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
  {
    // No peer is added from now on (UpdatePeers may still run concurrently).
    absl::MutexLock lock(&peers_mu_);
    stopping_ = true;
  }
  for (Peer* peer : PeerList()) {
    std::vector<StreamReactor*> cancel;
    std::vector<StreamReactor*> release;
    {
      absl::MutexLock lock(&peer->mu);
      peer->stop = true;
      if (peer->snapshot_ctx != nullptr) peer->snapshot_ctx->TryCancel();
      for (auto& s : peer->streams) {
        if (s->done) continue;
        cancel.push_back(s.get());
        // An idle stream gets no OnWriteDone to release its hold.
        if (!s->writing && !s->hold_released) {
          s->hold_released = true;
          release.push_back(s.get());
        }
      }
      peer->stream = nullptr;
    }
    // Outside the lock: gRPC may run reactions inline. Nothing deletes the
    // streams meanwhile (peer->stop stops Send()).
    for (StreamReactor* s : cancel) s->ctx_.TryCancel();
    for (StreamReactor* s : release) s->RemoveHold();
    {
      absl::MutexLock lock(&peer->mu);
      peer->mu.Await(absl::Condition(
          +[](int* n) { return *n == 0; }, &peer->live_streams));
    }
    if (peer->snapshotter.joinable()) peer->snapshotter.join();
  }
}

void GrpcTransport::Send(std::vector<pb::Message> messages) {
  const absl::Time now = absl::Now();
  for (pb::Message& m : messages) {
    // Send() and UpdatePeers() run on one thread: no lock to read peers_.
    auto it = peers_.find(m.to());
    if (it == peers_.end()) {
      Report(pb::MSG_UNREACHABLE, m.to(), false);
      continue;
    }
    Peer* peer = it->second.get();
    bool dropped = false;
    bool snapshot_dropped = false;
    StreamReactor* start = nullptr;
    StreamReactor* write = nullptr;
    StreamReactor* stuck = nullptr;
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
        StreamReactor* s = peer->stream;
        if (s != nullptr && s->writing && now - s->write_started > options_.send_timeout) {
          // The peer stopped reading or the connection is dead: give up on
          // this stream (its OnWriteDone(false) releases it).
          stuck = s;
          peer->stream = nullptr;
        } else if (s == nullptr && !peer->queue.empty()) {
          peer->streams.erase(
              std::remove_if(peer->streams.begin(), peer->streams.end(),
                             [](const std::unique_ptr<StreamReactor>& r) { return r->done; }),
              peer->streams.end());
          peer->streams.push_back(std::make_unique<StreamReactor>(this, peer));
          s = peer->stream = peer->streams.back().get();
          ++peer->live_streams;
          s->writing = true;
          s->write_started = now;
          TakeBatch(peer->queue, peer->queued_bytes, options_.max_batch_bytes, &s->sending_);
          start = s;
        } else if (s != nullptr && !s->writing && !peer->queue.empty()) {
          s->writing = true;
          s->write_started = now;
          TakeBatch(peer->queue, peer->queued_bytes, options_.max_batch_bytes, &s->sending_);
          write = s;
        }
      }
    }
    // gRPC calls outside the lock (they may run reactions inline).
    if (stuck != nullptr) stuck->ctx_.TryCancel();
    if (start != nullptr) {
      start->Begin(peer->stub.get());
      absl::MutexLock lock(&mu_);
      ++send_calls_;
    }
    if (write != nullptr) {
      write->StartWrite(&write->sending_);
      absl::MutexLock lock(&mu_);
      ++send_calls_;
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

void GrpcTransport::OnWriteDone(Peer* peer, StreamReactor* stream, bool ok) {
  bool release = false;
  int lost = 0;
  {
    absl::MutexLock lock(&peer->mu);
    if (ok && peer->stream == stream && !peer->stop) {
      if (peer->queue.empty()) {
        stream->writing = false;  // idle; Send() writes next
        ok = false;
      } else {
        stream->write_started = absl::Now();
        TakeBatch(peer->queue, peer->queued_bytes, options_.max_batch_bytes, &stream->sending_);
      }
    } else {
      // Broken, abandoned as stuck, or stopping: this stream is finished.
      stream->writing = false;
      if (!ok) lost = stream->sending_.messages_size();
      if (peer->stream == stream) peer->stream = nullptr;
      release = !stream->hold_released;
      stream->hold_released = true;
      ok = false;
    }
  }
  if (lost > 0) {
    absl::MutexLock lock(&mu_);
    dropped_ += lost;
  }
  if (release) stream->RemoveHold();  // OnDone follows
  if (ok) {
    {
      absl::MutexLock lock(&mu_);
      ++send_calls_;
    }
    stream->StartWrite(&stream->sending_);
  }
}

void GrpcTransport::OnStreamDone(Peer* peer, StreamReactor* stream, const grpc::Status& status) {
  bool stopping;
  {
    absl::MutexLock lock(&peer->mu);
    stream->done = true;
    --peer->live_streams;
    if (peer->stream == stream) peer->stream = nullptr;
    stopping = peer->stop;
  }
  // No access to `stream` from here: Send() may delete it.
  if (!stopping && !status.ok()) {
    NoteRefusal(peer->id, status);
    Report(pb::MSG_UNREACHABLE, peer->id, false);
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
  if (options_.call_metadata) {
    for (const auto& [key, value] : options_.call_metadata(peer->id)) ctx.AddMetadata(key, value);
  }
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
  if (!status.ok()) NoteRefusal(peer->id, status);
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

void GrpcTransport::NoteRefusal(uint64_t peer, const grpc::Status& status) {
  if (options_.on_refused && (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
                              status.error_code() == grpc::StatusCode::PERMISSION_DENIED)) {
    options_.on_refused(peer, status);
  }
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
