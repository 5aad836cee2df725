// The KV-Raft client over KvService.Batch streams (proto/kv.proto): the fast
// path of kvbench and of any program with many requests in flight.
//
// - KvConnection: one Batch stream to one replica over one TCP connection,
//   shared by any number of callers. Requests queued while a message is being
//   written go out together in the next one; answers are matched by id.
// - KvPool: connections to every replica of a cluster (several per replica if
//   asked) and one timer thread that enforces request deadlines and runs
//   delayed retries. Everything is per pool: no global state.
// - AsyncClerk: one client session (Raft thesis §6.3) with the same rules as
//   Clerk (client/clerk.h): it registers a session before its first write,
//   numbers its writes, follows leader hints, retries with the same sequence
//   number, backs off after a full round of failures, gives up at the
//   operation deadline. Calls complete through callbacks; no thread waits.
//
// Callbacks run on gRPC's threads or the pool's timer thread. They must not
// block; they may start the next operation.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "client/clerk.h"
#include "grpcpp/grpcpp.h"
#include "proto/kv.grpc.pb.h"

namespace ds::client {

class KvConnection {
 public:
  explicit KvConnection(std::shared_ptr<grpc::Channel> channel);
  // Cancels the stream; requests in flight complete with UNAVAILABLE first.
  ~KvConnection();
  KvConnection(const KvConnection&) = delete;
  KvConnection& operator=(const KvConnection&) = delete;

  // `done` gets the response. Failures of the connection itself come as a
  // response too: code UNAVAILABLE (stream broken: the outcome of a write is
  // unknown), DEADLINE_EXCEEDED (no answer by `deadline`, as enforced by
  // ExpireDeadlines). The request's id is assigned here.
  using Callback = std::function<void(kv::pb::KvResponse)>;
  void Send(kv::pb::KvRequest request, absl::Time deadline, Callback done);

  // Fails the requests whose deadline is at or before `now`.
  void ExpireDeadlines(absl::Time now);

 private:
  class Stream;
  struct Pending {
    Callback done;
    absl::Time deadline;
    Stream* stream = nullptr;  // the stream that carries it
  };

  void OnResponses(kv::pb::KvResponseBatch batch);
  void OnWriteDone(Stream* stream, bool ok);
  void OnReadFailed(Stream* stream);
  void OnStreamDone(Stream* stream, const grpc::Status& status);

  const std::unique_ptr<kv::pb::KvService::Stub> stub_;
  absl::Mutex mu_;
  Stream* stream_ ABSL_GUARDED_BY(mu_) = nullptr;  // the open stream, if any
  // Every stream not yet deleted. Only the connection deletes streams (once
  // done), so a pointer taken from here stays valid outside mu_ for as long
  // as the caller is the only thread that may delete (Send or the destructor).
  std::vector<std::unique_ptr<Stream>> streams_ ABSL_GUARDED_BY(mu_);
  int live_streams_ ABSL_GUARDED_BY(mu_) = 0;  // not yet done
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
  kv::pb::KvRequestBatch outbox_ ABSL_GUARDED_BY(mu_);  // waiting for a write
  // No deadline in pending_ is before this (Unix ns); written under mu_, read
  // without it by ExpireDeadlines to skip connections with nothing due. It
  // may be too early (answered requests do not raise it: one needless scan);
  // a timer pass racing the Send that lowers it sees the new value on its
  // next pass, one timer period later.
  std::atomic<int64_t> earliest_deadline_ns_{std::numeric_limits<int64_t>::max()};
};

class KvPool {
 public:
  // `connections_per_endpoint` connections (>= 1) to each endpoint.
  KvPool(std::vector<std::string> endpoints, int connections_per_endpoint);
  ~KvPool();
  KvPool(const KvPool&) = delete;
  KvPool& operator=(const KvPool&) = delete;

  const std::vector<std::string>& endpoints() const { return endpoints_; }
  int connections_per_endpoint() const { return per_endpoint_; }
  KvConnection* connection(size_t endpoint, int index);

  // Runs `fn` on the timer thread at `when` (within the timer's period).
  void RunAt(absl::Time when, std::function<void()> fn);

 private:
  void RunTimer();

  const std::vector<std::string> endpoints_;
  const int per_endpoint_;
  std::vector<std::unique_ptr<KvConnection>> connections_;  // endpoint-major
  absl::Mutex mu_;
  std::multimap<absl::Time, std::function<void()>> timers_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_;
  std::thread timer_thread_;
};

class AsyncClerk {
 public:
  // Uses connection `connection_index` (modulo the pool's count) to each
  // replica of `pool`; options.endpoints and options.channels are ignored.
  AsyncClerk(ClerkOptions options, std::shared_ptr<KvPool> pool, int connection_index);

  // One operation at a time: start the next from the previous one's callback
  // or after it. Same results as the Clerk's methods of the same names. The
  // clerk (and its pool) must outlive the operation: its callbacks use it.
  void Get(std::string key, std::function<void(absl::StatusOr<GetResult>)> done);
  void Put(std::string key, std::string value, std::function<void(absl::Status)> done);
  void Append(std::string key, std::string value, std::function<void(absl::Status)> done);
  void Delete(std::string key, std::function<void(absl::StatusOr<bool>)> done);

  // The session (0 until the first write registered one).
  uint64_t client_id() const;

 private:
  struct Call;
  using ResponseCallback = std::function<void(absl::StatusOr<kv::pb::KvResponse>)>;

  void Write(kv::pb::KvRequest request, ResponseCallback done);
  // Sends `request` until it succeeds, fails finally, or `deadline` passes.
  void Run(kv::pb::KvRequest request, absl::Time deadline, ResponseCallback done);
  void Attempt(std::shared_ptr<Call> call);
  void OnAnswer(std::shared_ptr<Call> call, size_t target, kv::pb::KvResponse resp);

  const ClerkOptions options_;
  const std::shared_ptr<KvPool> pool_;
  const int connection_index_;
  mutable absl::Mutex mu_;
  size_t leader_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t client_id_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace ds::client
