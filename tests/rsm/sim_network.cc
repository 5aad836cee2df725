#include "tests/rsm/sim_network.h"

#include <utility>

#include "absl/time/clock.h"

namespace ds::rsm::testing {

// The receiving side of one replica incarnation. The handler runs under mu so
// that Stop() returning means "not running and never again" (the Transport
// contract); the handler is the Node's, which only queues the message.
class Network::Endpoint {
 public:
  explicit Endpoint(raft::Transport::Handler handler) : handler_(std::move(handler)) {}
  void Deliver(raft::pb::Message m) {
    absl::MutexLock lock(&mu_);
    if (handler_) handler_(std::move(m));
  }
  void Close() {
    absl::MutexLock lock(&mu_);
    handler_ = nullptr;
  }

 private:
  absl::Mutex mu_;
  raft::Transport::Handler handler_ ABSL_GUARDED_BY(mu_);
};

class Network::MemTransport : public raft::Transport {
 public:
  MemTransport(Network* net, uint64_t id) : net_(net), id_(id) {}
  ~MemTransport() override { Stop(); }

  void Start(Handler handler) override {
    ep_ = std::make_shared<Endpoint>(std::move(handler));
    net_->Register(id_, ep_);
  }
  void Send(std::vector<raft::pb::Message> messages) override {
    net_->Send(id_, std::move(messages));
  }
  void Stop() override {
    if (ep_ == nullptr) return;
    net_->Unregister(id_, ep_.get());
    ep_->Close();
  }

 private:
  Network* const net_;
  const uint64_t id_;
  std::shared_ptr<Endpoint> ep_;  // set by Start, before any other call
};

Network::Network(uint64_t seed) : rng_(seed) {
  dispatcher_ = std::thread([this] { Dispatch(); });
}

Network::~Network() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  dispatcher_.join();
}

std::unique_ptr<raft::Transport> Network::NewTransport(uint64_t id) {
  return std::make_unique<MemTransport>(this, id);
}

void Network::SetReliable(bool reliable) {
  absl::MutexLock lock(&mu_);
  reliable_ = reliable;
}

void Network::SetDuplicatePerMille(uint64_t per_mille) {
  absl::MutexLock lock(&mu_);
  duplicate_per_mille_ = per_mille;
}

void Network::Partition(const std::vector<std::vector<uint64_t>>& groups) {
  absl::MutexLock lock(&mu_);
  group_.clear();
  // Group numbers from 1; a replica in no group gets a group of its own.
  int g = 1;
  for (const auto& group : groups) {
    for (uint64_t id : group) group_[id] = g;
    ++g;
  }
  partitioned_ = true;
}

void Network::ConnectAll() {
  absl::MutexLock lock(&mu_);
  group_.clear();
  partitioned_ = false;
}

bool Network::ConnectedLocked(uint64_t a, uint64_t b) const {
  if (!partitioned_ || a == b) return true;
  // A replica named by no group of the partition is isolated.
  auto ga = group_.find(a);
  auto gb = group_.find(b);
  return ga != group_.end() && gb != group_.end() && ga->second == gb->second;
}

absl::Duration Network::DelayLocked() {
  if (reliable_) return absl::ZeroDuration();
  return absl::Microseconds(
      static_cast<int64_t>(rng_.Uniform(absl::ToInt64Microseconds(kMaxDelay) + 1)));
}

Network::Leg Network::ClientLeg() {
  absl::MutexLock lock(&mu_);
  Leg leg;
  if (!reliable_) leg.lost = rng_.Chance(kLossPerMille);
  leg.delay = DelayLocked();
  return leg;
}

uint64_t Network::delivered() const {
  absl::MutexLock lock(&mu_);
  return delivered_;
}

uint64_t Network::dropped() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

uint64_t Network::snapshots_delivered() const {
  absl::MutexLock lock(&mu_);
  return snapshots_delivered_;
}

void Network::Register(uint64_t id, std::shared_ptr<Endpoint> ep) {
  absl::MutexLock lock(&mu_);
  endpoints_[id] = std::move(ep);
}

void Network::Unregister(uint64_t id, const Endpoint* ep) {
  absl::MutexLock lock(&mu_);
  auto it = endpoints_.find(id);
  if (it != endpoints_.end() && it->second.get() == ep) endpoints_.erase(it);
}

void Network::EnqueueLocked(raft::pb::Message m, absl::Time at) {
  queue_.push(InFlight{at, next_seq_++, std::move(m)});
}

void Network::ReportLocked(const raft::pb::Message& m, raft::pb::MessageType type, bool reject,
                           absl::Time at) {
  raft::pb::Message r;
  r.set_type(type);
  r.set_from(m.to());
  r.set_to(m.from());
  r.set_reject(reject);
  EnqueueLocked(std::move(r), at);
}

void Network::Send(uint64_t from, std::vector<raft::pb::Message> messages) {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  for (raft::pb::Message& m : messages) {
    m.set_from(from);
    const absl::Time at = now + DelayLocked();
    const bool snap = m.type() == raft::pb::MSG_SNAP;
    if (!ConnectedLocked(from, m.to())) {
      // What the gRPC transport does when a call fails: report the peer
      // unreachable (a snapshot: report the transfer failed).
      ++dropped_;
      ReportLocked(m, snap ? raft::pb::MSG_SNAP_STATUS : raft::pb::MSG_UNREACHABLE, true, at);
      continue;
    }
    if (!reliable_ && rng_.Chance(kLossPerMille)) {
      // Lost on the wire: nobody is told, except about a snapshot stream,
      // whose failure the sender's transport would see.
      ++dropped_;
      if (snap) ReportLocked(m, raft::pb::MSG_SNAP_STATUS, true, at);
      continue;
    }
    if (!reliable_ && rng_.Chance(duplicate_per_mille_)) EnqueueLocked(m, now + DelayLocked());
    EnqueueLocked(std::move(m), at);
  }
}

void Network::Dispatch() {
  auto due = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stop_ || (!queue_.empty() && queue_.top().deliver_at <= absl::Now());
  };
  for (;;) {
    std::vector<raft::pb::Message> batch;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time wake =
          queue_.empty() ? absl::Now() + absl::Milliseconds(50) : queue_.top().deliver_at;
      // Also wake for new messages that may be due earlier than `wake`.
      auto ready_or_new = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return due() || (!queue_.empty() && queue_.top().deliver_at < wake);
      };
      mu_.AwaitWithDeadline(absl::Condition(&ready_or_new), wake);
      if (stop_) return;
      const absl::Time now = absl::Now();
      while (!queue_.empty() && queue_.top().deliver_at <= now) {
        batch.push_back(std::move(const_cast<InFlight&>(queue_.top()).message));
        queue_.pop();
      }
    }
    for (raft::pb::Message& m : batch) {
      std::shared_ptr<Endpoint> ep;
      const bool report =
          m.type() == raft::pb::MSG_UNREACHABLE || m.type() == raft::pb::MSG_SNAP_STATUS;
      {
        absl::MutexLock lock(&mu_);
        auto it = endpoints_.find(m.to());
        if (it != endpoints_.end()) ep = it->second;
        // A partition made while the message was in flight cuts it too.
        if (ep != nullptr && !report && !ConnectedLocked(m.from(), m.to())) ep = nullptr;
        if (ep == nullptr) {
          ++dropped_;
          if (!report) {
            ReportLocked(m,
                         m.type() == raft::pb::MSG_SNAP ? raft::pb::MSG_SNAP_STATUS
                                                        : raft::pb::MSG_UNREACHABLE,
                         true, absl::Now());
          }
          continue;
        }
        ++delivered_;
        if (m.type() == raft::pb::MSG_SNAP) {
          ++snapshots_delivered_;
          ReportLocked(m, raft::pb::MSG_SNAP_STATUS, false, absl::Now());
        }
      }
      ep->Deliver(std::move(m));
    }
  }
}

}  // namespace ds::rsm::testing
