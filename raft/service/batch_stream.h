// The server side of a Batch stream (see KvService.Batch in proto/kv.proto):
// many requests over one long-lived bidirectional stream, each tagged with an
// id and answered, in completion order, in batches. Generic over the batch
// messages: any InBatch with `repeated Request requests` and OutBatch with
// `repeated Response responses`.
//
// Reads run ahead of the answers: each message read is dispatched at once and
// the next read started, so a client may keep any number of requests in
// flight. Answers are queued and written as they complete; everything queued
// while a write is in flight goes out in the next message. gRPC's reactor
// methods are never called under the state's mutex (they may run callbacks
// inline).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/stream_registry.h"
#include "grpcpp/grpcpp.h"

namespace ds::rsm {

template <typename InBatch, typename OutBatch>
class BatchStream final : public grpc::ServerBidiReactor<InBatch, OutBatch>,
                          public common::ClosableStream {
 public:
  using Request = std::remove_cvref_t<decltype(std::declval<InBatch&>().requests(0))>;
  using Response = std::remove_cvref_t<decltype(std::declval<OutBatch&>().responses(0))>;
  // Runs one request and passes its response to the callback exactly once, on
  // any thread. `deadline` is when the stream received it plus the server's
  // request timeout.
  using Handler = std::function<void(Request, absl::Time, std::function<void(Response)>)>;

  // A reactor for one Batch call; it owns itself until gRPC is done with it,
  // and `streams` can end it (server shutdown). `handler` must outlive it.
  static BatchStream* Open(const Handler* handler, absl::Duration request_timeout,
                           common::StreamRegistry* streams) {
    std::shared_ptr<BatchStream> r(new BatchStream(handler, request_timeout));
    r->self_ = r;
    r->StartRead(&r->in_);
    streams->Add(r);
    return r.get();
  }

  // Server shutdown: answers still in flight are dropped (their outcome is
  // unknown to the client, which retries elsewhere with the same sequence
  // numbers); the stream ends with UNAVAILABLE.
  void Close() override {
    {
      absl::MutexLock lock(&state_->mu);
      state_->broken = true;
      state_->final_status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "replica shutting down");
    }
    MaybeFinish(state_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client closed its side (or the call broke): answer what is in
      // flight, then finish.
      {
        absl::MutexLock lock(&state_->mu);
        state_->reads_done = true;
      }
      MaybeFinish(state_);
      return;
    }
    InBatch batch = std::move(in_);
    in_.Clear();
    {
      absl::MutexLock lock(&state_->mu);
      if (state_->finishing) return;
      state_->in_flight += batch.requests_size();
    }
    // After StartRead the reactor may finish and go away (a cancelled call)
    // before this function returns: use only locals from here on.
    const Handler* const handler = handler_;
    const std::shared_ptr<State> state = state_;
    const absl::Time deadline = absl::Now() + request_timeout_;
    this->StartRead(&in_);
    for (Request& req : *batch.mutable_requests()) {
      (*handler)(std::move(req), deadline,
                 [state](Response resp) { Answer(state, std::move(resp)); });
    }
  }

  void OnWriteDone(bool ok) override {
    bool write = false;
    {
      absl::MutexLock lock(&state_->mu);
      state_->writing = false;
      if (!ok) {
        state_->broken = true;
      } else if (state_->out.responses_size() > 0 && !state_->finishing) {
        write = true;
        state_->writing = true;
        state_->sending = std::move(state_->out);
        state_->out.Clear();
      }
    }
    if (write) {
      this->StartWrite(&state_->sending);
    } else {
      MaybeFinish(state_);
    }
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&state_->mu);
      state_->broken = true;
    }
    MaybeFinish(state_);
  }

  void OnDone() override {
    {
      absl::MutexLock lock(&state_->mu);
      state_->reactor = nullptr;
    }
    std::shared_ptr<BatchStream> last = std::move(self_);  // may delete this on return
  }

 private:
  BatchStream(const Handler* handler, absl::Duration request_timeout)
      : handler_(handler), request_timeout_(request_timeout), state_(std::make_shared<State>()) {
    state_->reactor = this;
  }

  // Shared with the callbacks of requests in flight, which may outlive the
  // reactor (a cancelled stream finishes without waiting for them).
  struct State {
    absl::Mutex mu;
    BatchStream* reactor ABSL_GUARDED_BY(mu) = nullptr;
    OutBatch out ABSL_GUARDED_BY(mu);  // answers waiting for a write
    // The message being written; only touched by whoever set `writing`.
    OutBatch sending;
    int64_t in_flight ABSL_GUARDED_BY(mu) = 0;
    bool writing ABSL_GUARDED_BY(mu) = false;
    bool reads_done ABSL_GUARDED_BY(mu) = false;
    bool broken ABSL_GUARDED_BY(mu) = false;     // cancelled or a write failed
    bool finishing ABSL_GUARDED_BY(mu) = false;  // Finish() called or about to be
    grpc::Status final_status ABSL_GUARDED_BY(mu);
  };

  static void Answer(const std::shared_ptr<State>& state, Response resp) {
    BatchStream* write = nullptr;
    {
      absl::MutexLock lock(&state->mu);
      --state->in_flight;
      if (state->finishing || state->broken) {
        // Nobody to answer; the stream may be finishing on this request.
      } else {
        *state->out.add_responses() = std::move(resp);
        if (!state->writing) {
          state->writing = true;
          state->sending = std::move(state->out);
          state->out.Clear();
          write = state->reactor;
        }
      }
    }
    if (write != nullptr) {
      write->StartWrite(&state->sending);
    } else {
      MaybeFinish(state);
    }
  }

  // Finishes once nothing more will be written: the client is done sending
  // and every answer went out, or the stream broke (no write in flight).
  static void MaybeFinish(const std::shared_ptr<State>& state) {
    BatchStream* finish = nullptr;
    grpc::Status status;
    {
      absl::MutexLock lock(&state->mu);
      if (state->finishing || state->writing || state->reactor == nullptr) return;
      const bool drained =
          state->reads_done && state->in_flight == 0 && state->out.responses_size() == 0;
      if (!drained && !state->broken) return;
      state->finishing = true;
      finish = state->reactor;
      status = state->final_status;
    }
    finish->Finish(status);
  }

  const Handler* const handler_;
  const absl::Duration request_timeout_;
  std::shared_ptr<State> state_;
  InBatch in_;
  std::shared_ptr<BatchStream> self_;
};

}  // namespace ds::rsm
