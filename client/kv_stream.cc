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
  r.set_code(code);
  r.set_message(std::move(message));
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

KvPool::KvPool(std::vector<std::string> endpoints, int connections_per_endpoint)
    : endpoints_(std::move(endpoints)), per_endpoint_(std::max(1, connections_per_endpoint)) {
  for (const std::string& e : endpoints_) {
    for (int c = 0; c < per_endpoint_; ++c) {
      connections_.push_back(std::make_unique<KvConnection>(MakeKvChannel(e, c)));
    }
  }
  timer_thread_ = std::thread([this] { RunTimer(); });
}

KvPool::~KvPool() {
  stop_.Notify();
  timer_thread_.join();
  connections_.clear();
}

KvConnection* KvPool::connection(size_t endpoint, int index) {
  return connections_[endpoint * per_endpoint_ + (index % per_endpoint_)].get();
}

void KvPool::RunAt(absl::Time when, std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  timers_.emplace(when, std::move(fn));
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

struct AsyncClerk::Call {
  explicit Call(const ClerkOptions& options) : backoff(options) {}
  KvRequest request;
  absl::Time deadline;
  ResponseCallback done;
  RetryBackoff backoff;
  std::string last_error = "no attempt made";
};

AsyncClerk::AsyncClerk(ClerkOptions options, std::shared_ptr<KvPool> pool, int connection_index)
    : options_(std::move(options)), pool_(std::move(pool)), connection_index_(connection_index) {
  absl::MutexLock lock(&mu_);
  client_id_ = options_.client_id;
}

uint64_t AsyncClerk::client_id() const {
  absl::MutexLock lock(&mu_);
  return client_id_;
}

void AsyncClerk::Run(KvRequest request, absl::Time deadline, ResponseCallback done) {
  auto call = std::make_shared<Call>(options_);
  call->request = std::move(request);
  call->deadline = deadline;
  call->done = std::move(done);
  Attempt(std::move(call));
}

void AsyncClerk::Attempt(std::shared_ptr<Call> call) {
  const absl::Time now = absl::Now();
  if (now >= call->deadline) {
    call->done(absl::DeadlineExceededError(
        absl::StrCat("no answer within ", absl::FormatDuration(options_.operation_timeout),
                     "; last error: ", call->last_error)));
    return;
  }
  size_t target;
  {
    absl::MutexLock lock(&mu_);
    target = leader_;
  }
  KvConnection* conn = pool_->connection(target, connection_index_);
  conn->Send(call->request, std::min(call->deadline, now + options_.attempt_timeout),
             [this, call, target](KvResponse resp) {
               OnAnswer(std::move(call), target, std::move(resp));
             });
}

void AsyncClerk::OnAnswer(std::shared_ptr<Call> call, size_t target, KvResponse resp) {
  if (resp.code() == grpc::StatusCode::OK) {
    call->done(std::move(resp));
    return;
  }
  const auto& endpoints = pool_->endpoints();
  call->last_error = absl::StrCat(endpoints[target], ": ", resp.message());
  if (IsFinalError(static_cast<grpc::StatusCode>(resp.code()))) {
    call->done(common::FromGrpcStatus(
        grpc::Status(static_cast<grpc::StatusCode>(resp.code()), call->last_error)));
    return;
  }
  // Not the leader, timed out or unreachable. Other calls of this clerk's
  // pool may have moved leader_ meanwhile; only move it away from `target`.
  {
    absl::MutexLock lock(&mu_);
    if (leader_ == target || !resp.leader_address().empty()) {
      leader_ = NextReplica(endpoints, target, resp.leader_address());
    }
  }
  if (absl::Duration pause = call->backoff.OnFailure(endpoints.size());
      pause > absl::ZeroDuration()) {
    pool_->RunAt(std::min(absl::Now() + pause, call->deadline), [this, call] { Attempt(call); });
    return;
  }
  Attempt(std::move(call));
}

void AsyncClerk::Write(KvRequest request, ResponseCallback done) {
  const absl::Time deadline = absl::Now() + options_.operation_timeout;
  uint64_t client_id;
  {
    absl::MutexLock lock(&mu_);
    client_id = client_id_;
  }
  auto send = [this, deadline](KvRequest req, ResponseCallback cb) {
    uint64_t id, seq;
    {
      absl::MutexLock lock(&mu_);
      id = client_id_;
      // A sequence number is used once, whatever the outcome: a write that
      // timed out may still be applied later.
      seq = next_sequence_++;
    }
    auto set = [&](auto* w) {
      w->set_client_id(id);
      w->set_sequence(seq);
    };
    if (req.has_put()) set(req.mutable_put());
    if (req.has_append()) set(req.mutable_append());
    if (req.has_delete_()) set(req.mutable_delete_());
    Run(std::move(req), deadline, [this, cb = std::move(cb)](absl::StatusOr<KvResponse> r) {
      if (r.status().code() == absl::StatusCode::kFailedPrecondition) {
        // The session expired: forget it (the next write opens a new one);
        // this write's outcome is unknown and is not re-sent (see Clerk).
        absl::MutexLock lock(&mu_);
        client_id_ = 0;
        next_sequence_ = 1;
      }
      cb(std::move(r));
    });
  };
  if (client_id != 0) {
    send(std::move(request), std::move(done));
    return;
  }
  KvRequest reg;
  reg.mutable_register_();
  Run(std::move(reg), deadline,
      [this, send, request = std::move(request),
       done = std::move(done)](absl::StatusOr<KvResponse> r) mutable {
        if (!r.ok()) {
          done(r.status());
          return;
        }
        {
          absl::MutexLock lock(&mu_);
          client_id_ = r->register_().client_id();
          next_sequence_ = 1;
        }
        send(std::move(request), std::move(done));
      });
}

void AsyncClerk::Get(std::string key, std::function<void(absl::StatusOr<GetResult>)> done) {
  KvRequest req;
  req.mutable_get()->set_key(std::move(key));
  Run(std::move(req), absl::Now() + options_.operation_timeout,
      [done = std::move(done)](absl::StatusOr<KvResponse> r) {
        if (!r.ok()) {
          done(r.status());
          return;
        }
        done(GetResult{r->get().found(), std::move(*r->mutable_get()->mutable_value())});
      });
}

void AsyncClerk::Put(std::string key, std::string value, std::function<void(absl::Status)> done) {
  KvRequest req;
  req.mutable_put()->set_key(std::move(key));
  req.mutable_put()->set_value(std::move(value));
  Write(std::move(req),
        [done = std::move(done)](absl::StatusOr<KvResponse> r) { done(r.status()); });
}

void AsyncClerk::Append(std::string key, std::string value,
                        std::function<void(absl::Status)> done) {
  KvRequest req;
  req.mutable_append()->set_key(std::move(key));
  req.mutable_append()->set_value(std::move(value));
  Write(std::move(req),
        [done = std::move(done)](absl::StatusOr<KvResponse> r) { done(r.status()); });
}

void AsyncClerk::Delete(std::string key, std::function<void(absl::StatusOr<bool>)> done) {
  KvRequest req;
  req.mutable_delete_()->set_key(std::move(key));
  Write(std::move(req), [done = std::move(done)](absl::StatusOr<KvResponse> r) {
    if (!r.ok()) {
      done(r.status());
      return;
    }
    done(r->delete_().found());
  });
}

}  // namespace ds::client
