#include "client/kv_stream.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace ds::client {

using kv::pb::KvRequest;
using kv::pb::KvRequestBatch;
using kv::pb::KvResponse;
using kv::pb::KvResponseBatch;

namespace {

KvResponse ErrorResponse(grpc::StatusCode code, std::string message) {
  KvResponse r;
  r.mutable_status()->set_code(code);
  r.mutable_status()->set_message(std::move(message));
  return r;
}

}  // namespace

// ---- KvConnection ----

class KvConnection::Stream final : public grpc::ClientBidiReactor<KvRequestBatch, KvResponseBatch> {
 public:
  explicit Stream(KvConnection* conn) : conn_(conn) {}

  // Opens the call and writes `sending` (set by the caller). The hold keeps
  // gRPC from finishing the call while Send() may still start a write from
  // outside a reaction; it is released once the stream is known broken (its
  // read failed) and no write is in flight.
  void Begin() {
    conn_->stub_->async()->Batch(&ctx_, this);
    AddHold();
    StartRead(&in_);
    StartWrite(&sending_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      conn_->OnReadFailed(this);  // OnDone follows once the hold is gone
      return;
    }
    // Answers first, then the next read: the connection outlives this stream
    // only until OnDone, which cannot run before this reaction returns.
    conn_->OnResponses(std::move(in_));
    in_.Clear();
    StartRead(&in_);
  }
  void OnWriteDone(bool ok) override { conn_->OnWriteDone(this, ok); }
  void OnDone(const grpc::Status& status) override { conn_->OnStreamDone(this, status); }

  grpc::ClientContext ctx_;
  KvResponseBatch in_;
  // The message being written; only touched by whoever set `writing_`.
  KvRequestBatch sending_;
  // Guarded by the connection's mu_:
  bool writing_ = false;
  bool read_failed_ = false;
  bool hold_released_ = false;
  bool done_ = false;

 private:
  KvConnection* const conn_;
};

KvConnection::KvConnection(std::shared_ptr<grpc::Channel> channel)
    : stub_(kv::pb::KvService::NewStub(std::move(channel))) {}

KvConnection::~KvConnection() {
  std::vector<Stream*> live;
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    for (auto& s : streams_) {
      if (!s->done_) live.push_back(s.get());
    }
  }
  // Nothing else deletes streams now, so these stay valid.
  for (Stream* s : live) s->ctx_.TryCancel();
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* n) { return *n == 0; }, &live_streams_));
}

void KvConnection::Send(KvRequest request, absl::Time deadline, Callback done) {
  Stream* start = nullptr;
  Stream* write = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (!closing_) {
      const uint64_t id = next_id_++;
      request.set_id(id);
      const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      request.set_timeout_ms(static_cast<uint32_t>(std::clamp<int64_t>(ms, 1, 1 << 30)));
      *outbox_.add_requests() = std::move(request);
      if (stream_ == nullptr) {
        // Streams that are done are deleted here, by the only thread that
        // deletes (callers do not destroy a connection they still use).
        streams_.erase(std::remove_if(streams_.begin(), streams_.end(),
                                      [](const std::unique_ptr<Stream>& s) { return s->done_; }),
                       streams_.end());
        streams_.push_back(std::make_unique<Stream>(this));
        stream_ = streams_.back().get();
        ++live_streams_;
        start = stream_;
      }
      pending_.emplace(id, Pending{std::move(done), deadline, stream_});
      const int64_t due = absl::ToUnixNanos(deadline);
      if (due < earliest_deadline_ns_.load(std::memory_order_relaxed)) {
        earliest_deadline_ns_.store(due, std::memory_order_relaxed);
      }
      if (!stream_->writing_) {
        stream_->writing_ = true;
        stream_->sending_ = std::move(outbox_);
        outbox_.Clear();
        if (start == nullptr) write = stream_;
      }
    }
  }
  if (start != nullptr) {
    start->Begin();
  } else if (write != nullptr) {
    write->StartWrite(&write->sending_);
  } else if (done) {
    done(ErrorResponse(grpc::StatusCode::UNAVAILABLE, "connection closing"));
  }
}

void KvConnection::OnWriteDone(Stream* stream, bool ok) {
  bool release = false;
  bool write_next = false;
  {
    absl::MutexLock lock(&mu_);
    // A failed write means the call is broken: its read fails too, and
    // OnStreamDone fails what the stream carried.
    if (!ok || stream_ != stream || outbox_.requests_size() == 0) {
      stream->writing_ = false;
      if (stream->read_failed_ && !stream->hold_released_) {
        stream->hold_released_ = true;
        release = true;
      }
    } else {
      stream->sending_ = std::move(outbox_);
      outbox_.Clear();
      write_next = true;
    }
  }
  if (release) stream->RemoveHold();
  if (write_next) stream->StartWrite(&stream->sending_);
}

void KvConnection::OnReadFailed(Stream* stream) {
  bool release = false;
  {
    absl::MutexLock lock(&mu_);
    stream->read_failed_ = true;
    if (stream_ == stream) {
      // The next Send opens a new stream; what is queued for this one is
      // failed by OnStreamDone (its pending entries name this stream).
      stream_ = nullptr;
      outbox_.Clear();
    }
    if (!stream->writing_ && !stream->hold_released_) {
      stream->hold_released_ = true;
      release = true;
    }
  }
  if (release) stream->RemoveHold();
}

void KvConnection::OnResponses(KvResponseBatch batch) {
  std::vector<std::pair<Callback, KvResponse>> ready;
  ready.reserve(batch.responses_size());
  {
    absl::MutexLock lock(&mu_);
    for (KvResponse& r : *batch.mutable_responses()) {
      auto it = pending_.find(r.id());
      if (it == pending_.end()) continue;  // expired meanwhile
      ready.emplace_back(std::move(it->second.done), std::move(r));
      pending_.erase(it);
    }
  }
  for (auto& [done, resp] : ready) done(std::move(resp));
}

void KvConnection::OnStreamDone(Stream* stream, const grpc::Status& status) {
  std::vector<Callback> failed;
  {
    absl::MutexLock lock(&mu_);
    stream->done_ = true;
    --live_streams_;
    if (stream_ == stream) {
      stream_ = nullptr;
      outbox_.Clear();  // queued for this stream, failed below
    }
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.stream == stream) {
        failed.push_back(std::move(it->second.done));
        pending_.erase(it++);
      } else {
        ++it;
      }
    }
  }
  // No access to `stream` from here: the connection may delete it.
  const std::string why = absl::StrCat("connection lost (", status.error_message(), ")");
  for (Callback& done : failed) done(ErrorResponse(grpc::StatusCode::UNAVAILABLE, why));
}

void KvConnection::ExpireDeadlines(absl::Time now) {
  // The timer calls this for every connection every few milliseconds while
  // deadlines are seconds away: skip the lock and the scan until one is due.
  if (absl::ToUnixNanos(now) < earliest_deadline_ns_.load(std::memory_order_relaxed)) return;
  std::vector<Callback> expired;
  {
    absl::MutexLock lock(&mu_);
    int64_t earliest = std::numeric_limits<int64_t>::max();
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.deadline <= now) {
        expired.push_back(std::move(it->second.done));
        pending_.erase(it++);
      } else {
        earliest = std::min(earliest, absl::ToUnixNanos(it->second.deadline));
        ++it;
      }
    }
    earliest_deadline_ns_.store(earliest, std::memory_order_relaxed);
  }
  for (Callback& done : expired) {
    done(ErrorResponse(grpc::StatusCode::DEADLINE_EXCEEDED, "no answer in time"));
  }
}

// ---- KvPool ----

namespace {
// How often the pool's timer thread looks for expired requests and due
// retries: the resolution of client-side deadlines and backoff.
constexpr absl::Duration kTimerPeriod = absl::Milliseconds(5);
}  // namespace

KvPool::KvPool(std::vector<std::string> endpoints, int connections_per_endpoint,
               std::shared_ptr<grpc::ChannelCredentials> credentials)
    : endpoints_(std::move(endpoints)),
      per_endpoint_(std::max(1, connections_per_endpoint)),
      leader_(std::make_shared<LeaderCache>(endpoints_)) {
  for (const std::string& e : endpoints_) {
    for (int c = 0; c < per_endpoint_; ++c) {
      std::shared_ptr<grpc::Channel> ch = MakeChannel(e, c, credentials);
      if (c == 0) replica_.push_back(rsm::pb::Replica::NewStub(ch));
      connections_.push_back(std::make_unique<KvConnection>(std::move(ch)));
    }
  }
  timer_thread_ = std::thread([this] { RunTimer(); });
}

KvPool::~KvPool() {
  stop_.Notify();
  timer_thread_.join();
  calls_.Close();  // late leader probes, while the connections still exist
  connections_.clear();
}

KvConnection* KvPool::connection(size_t endpoint, int index) {
  return connections_[endpoint * per_endpoint_ + (index % per_endpoint_)].get();
}

void KvPool::RunAt(absl::Time when, std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  timers_.emplace(when, std::move(fn));
}

void KvPool::Probe(size_t endpoint, absl::Time deadline,
                   std::function<void(absl::StatusOr<rsm::pb::StatusResponse>)> done) {
  ProbeReplica(replica_[endpoint].get(), &calls_, deadline, std::move(done));
}

void KvPool::RunTimer() {
  while (!stop_.WaitForNotificationWithTimeout(kTimerPeriod)) {
    const absl::Time now = absl::Now();
    for (auto& c : connections_) c->ExpireDeadlines(now);
    std::vector<std::function<void()>> due;
    {
      absl::MutexLock lock(&mu_);
      while (!timers_.empty() && timers_.begin()->first <= now) {
        due.push_back(std::move(timers_.begin()->second));
        timers_.erase(timers_.begin());
      }
    }
    for (auto& fn : due) fn();
  }
}

// ---- AsyncClerk ----

AsyncClerk::AsyncClerk(ClerkOptions options, std::shared_ptr<KvPool> pool, int connection_index)
    : pool_(std::move(pool)),
      transport_(std::make_unique<KvPoolTransport>(pool_.get(), connection_index)),
      client_(std::make_unique<KvClient>(transport_.get(), pool_->leader(), ToRetryOptions(options),
                                         options.session)) {}

AsyncClerk::~AsyncClerk() = default;

void AsyncClerk::Get(std::string key, std::function<void(absl::StatusOr<GetResult>)> done) {
  client_->Get(std::move(key), std::move(done));
}

void AsyncClerk::Put(std::string key, std::string value, std::function<void(absl::Status)> done) {
  client_->Put(std::move(key), std::move(value), std::move(done));
}

void AsyncClerk::Append(std::string key, std::string value,
                        std::function<void(absl::Status)> done) {
  client_->Append(std::move(key), std::move(value), std::move(done));
}

void AsyncClerk::Delete(std::string key, std::function<void(absl::StatusOr<bool>)> done) {
  client_->Delete(std::move(key), std::move(done));
}

}  // namespace ds::client
