// The KV-Raft client over KvService.Batch streams (proto/kv.proto): the fast
// path of kvbench and of any program with many requests in flight.
//
// - KvConnection: one Batch stream to one replica over one TCP connection,
//   shared by any number of callers. Requests queued while a message is being
//   written go out together in the next one; answers are matched by id.
// - KvPool: connections to every replica of a cluster (several per replica if
//   asked), the leader cache its clerks share, and one timer thread that
//   enforces request deadlines and runs delayed retries. Everything is per
//   pool: no global state.
// - AsyncClerk: one client session: a KvClient (client/kv_client.h, the same
//   engine as Clerk's) whose requests travel on the pool's streams. Calls
//   complete through callbacks; no thread waits.
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
#include "client/kv_client.h"
#include "client/replica_client.h"
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
  // `connections_per_endpoint` connections (>= 1) to each endpoint, with
  // `credentials` (TLS; null: plaintext).
  KvPool(std::vector<std::string> endpoints, int connections_per_endpoint,
         std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);
  ~KvPool();
  KvPool(const KvPool&) = delete;
  KvPool& operator=(const KvPool&) = delete;

  const std::vector<std::string>& endpoints() const { return endpoints_; }
  int connections_per_endpoint() const { return per_endpoint_; }
  KvConnection* connection(size_t endpoint, int index);
  // The leader as the pool's clerks last found it.
  const std::shared_ptr<LeaderCache>& leader() const { return leader_; }

  // Runs `fn` on the timer thread at `when` (within the timer's period).
  void RunAt(absl::Time when, std::function<void()> fn);
  // Replica.Status of `endpoint`, for the leader search.
  void Probe(size_t endpoint, absl::Time deadline,
             std::function<void(absl::StatusOr<rsm::pb::StatusResponse>)> done);

 private:
  void RunTimer();

  const std::vector<std::string> endpoints_;
  const int per_endpoint_;
  const std::shared_ptr<LeaderCache> leader_;
  std::vector<std::unique_ptr<rsm::pb::Replica::Stub>> replica_;  // per endpoint
  CallTracker calls_;
  std::vector<std::unique_ptr<KvConnection>> connections_;  // endpoint-major
  absl::Mutex mu_;
  std::multimap<absl::Time, std::function<void()>> timers_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_;
  std::thread timer_thread_;
};

// The pool as one clerk sees it: its own connection to each replica.
class KvPoolTransport final : public KvTransport {
 public:
  // `pool` must outlive the transport.
  KvPoolTransport(KvPool* pool, int connection_index) : pool_(pool), index_(connection_index) {}
  const std::vector<std::string>& endpoints() const override { return pool_->endpoints(); }
  void Probe(size_t i, absl::Time deadline,
             std::function<void(absl::StatusOr<rsm::pb::StatusResponse>)> done) override {
    pool_->Probe(i, deadline, std::move(done));
  }
  void RunAt(absl::Time when, std::function<void()> fn) override {
    pool_->RunAt(when, std::move(fn));
  }
  void Send(size_t i, kv::pb::KvRequest request, absl::Time deadline,
            std::function<void(kv::pb::KvResponse)> done) override {
    pool_->connection(i, index_)->Send(std::move(request), deadline, std::move(done));
  }

 private:
  KvPool* const pool_;
  const int index_;
};

class AsyncClerk {
 public:
  // Uses connection `connection_index` (modulo the pool's count) to each
  // replica of `pool`; options.endpoints and options.channels are ignored.
  AsyncClerk(ClerkOptions options, std::shared_ptr<KvPool> pool, int connection_index);
  ~AsyncClerk();

  // One operation at a time: start the next from the previous one's callback
  // or after it. Same results as the Clerk's methods of the same names. The
  // clerk (and its pool) must outlive the operation: its callbacks use it.
  void Get(std::string key, std::function<void(absl::StatusOr<GetResult>)> done);
  void Put(std::string key, std::string value, std::function<void(absl::Status)> done);
  void Append(std::string key, std::string value, std::function<void(absl::Status)> done);
  void Delete(std::string key, std::function<void(absl::StatusOr<bool>)> done);

  SessionState session() const { return client_->session(); }

 private:
  const std::shared_ptr<KvPool> pool_;
  std::unique_ptr<KvPoolTransport> transport_;
  std::unique_ptr<KvClient> client_;
};

}  // namespace ds::client
