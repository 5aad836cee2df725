// The one client engine of every replicated service (kvraft, shardctrler,
// shardkv): finding the leader, following hints, retrying with back-off until
// a deadline, and client sessions. The KV clerks (client/clerk.h,
// client/kv_stream.h), the test harnesses' clerks and the controller and
// shardkv clerks are thin layers over it; only how a request reaches a
// replica differs between them (ReplicaTransport).
//
// - Finding the leader: a clerk that does not know the leader asks every
//   replica at once (the Replica service's Status) and goes to the first one
//   that names a leader, so a dead or cut-off replica costs nothing while the
//   others answer (instead of an attempt timeout per dead replica in list
//   order). The leader is then cached and shared by the operations of a clerk
//   (or of a pool of clerks).
// - Retry: UNAVAILABLE with a hint goes to the hinted replica; UNAVAILABLE
//   without one, a timeout or a broken connection forgets the leader and asks
//   again. Once a round of replicas has failed (or nobody knows a leader) the
//   clerk backs off (exponential, jittered) so that an election in progress
//   is not hammered. Errors no other replica can fix end the operation.
// - Sessions (exactly-once, see proto/rsm.proto): the client picks a random
//   session id and its creation time; its first write opens the session (one
//   log entry); each write carries the next sequence number and a retry reuses
//   it. A session the servers refuse as unknown (ABORTED) is replaced by a new
//   one; the command is sent again under the new session only if no earlier
//   attempt of it can have been applied, else it fails with its outcome
//   unknown.
//
// No lock is held across a request or a wait: operations are asynchronous
// (callbacks), and the blocking clerks wait outside every lock.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/timer.h"
#include "grpcpp/grpcpp.h"
#include "proto/rsm.grpc.pb.h"

namespace ds::client {

struct RetryOptions {
  // Deadline of one whole operation, retries included. Default 10 s.
  absl::Duration operation_timeout = absl::Seconds(10);
  // Deadline of one attempt (or leader probe) at one replica. Default 1 s.
  // Must be less than operation_timeout for retries to happen.
  absl::Duration attempt_timeout = absl::Seconds(1);
  // Back-off after a round of failures: starts here, doubles up to
  // max_backoff, with +-50% jitter. Defaults 20 ms and 500 ms.
  absl::Duration initial_backoff = absl::Milliseconds(20);
  absl::Duration max_backoff = absl::Milliseconds(500);
};

// The outcome of one attempt at one replica, as the wire carried it.
struct Reply {
  absl::Status status;
  // With kUnavailable: the replica's leader hint (0 / "": unknown).
  uint64_t leader_id = 0;
  std::string leader_address;
  // The replica refused before proposing: the command was certainly not applied.
  bool not_applied = false;
  // With kAborted: the servers' session watermark.
  int64_t session_watermark_unix_micros = 0;
};

// A Batch stream's per-request status as a Reply, and back.
Reply ToReply(const rsm::pb::ReplyStatus& status);
rsm::pb::ReplyStatus ToReplyStatus(const grpc::Status& status, const grpc::ClientContext& ctx);

// One replica's Replica.Status and its gRPC health check (no retry, no
// leader redirection), each bounded by `timeout`; errors name the endpoint.
absl::StatusOr<rsm::pb::StatusResponse> ReplicaStatus(
    const std::string& endpoint, absl::Duration timeout,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials = nullptr);
absl::Status ReplicaHealth(const std::string& endpoint, absl::Duration timeout,
                           const std::shared_ptr<grpc::ChannelCredentials>& credentials = nullptr);

// "leader", "follower", ... as kvctl prints a replica's role.
const char* RoleName(rsm::pb::Role role);

// Errors that another replica or a later attempt cannot fix.
bool IsFinalError(absl::StatusCode code);

// How requests reach the replicas of one group; implementations add how the
// service's own requests are sent (for example KvTransport).
class ReplicaTransport {
 public:
  virtual ~ReplicaTransport() = default;
  // The replicas' client addresses, in the user's order.
  virtual const std::vector<std::string>& endpoints() const = 0;
  // Asks replica `i` for its status (role, leader). `done` runs exactly once,
  // on any thread, possibly inline.
  virtual void Probe(size_t i, absl::Time deadline,
                     std::function<void(absl::StatusOr<rsm::pb::StatusResponse>)> done) = 0;
  // Runs `fn` at `when` on one of the transport's threads.
  virtual void RunAt(absl::Time when, std::function<void()> fn) = 0;
};

// Which replica leads, shared by the operations of one clerk or of many.
// Thread-safe.
class LeaderCache {
 public:
  static constexpr size_t kUnknown = std::numeric_limits<size_t>::max();

  explicit LeaderCache(std::vector<std::string> endpoints) : endpoints_(std::move(endpoints)) {}

  size_t Get() const ABSL_LOCKS_EXCLUDED(mu_);
  void Set(size_t i) ABSL_LOCKS_EXCLUDED(mu_);
  // Forgets `i` as the leader if it still is (another operation may have
  // learned better meanwhile).
  void Forget(size_t i) ABSL_LOCKS_EXCLUDED(mu_);
  // Replica `i` said its id is `id` (from a probe).
  void Learn(uint64_t id, size_t i) ABSL_LOCKS_EXCLUDED(mu_);
  // The replica a hint names, by address, else by a learned id; kUnknown.
  size_t Find(uint64_t id, const std::string& address) const ABSL_LOCKS_EXCLUDED(mu_);
  const std::vector<std::string>& endpoints() const { return endpoints_; }

 private:
  const std::vector<std::string> endpoints_;
  mutable absl::Mutex mu_;
  size_t leader_ ABSL_GUARDED_BY(mu_) = kUnknown;
  absl::flat_hash_map<uint64_t, size_t> ids_ ABSL_GUARDED_BY(mu_);
};

// Back-off once a round of failures is complete, so that an election in
// progress is not hammered; hints count too, which bounds a stale-hint loop.
class RetryBackoff {
 public:
  explicit RetryBackoff(const RetryOptions& options)
      : backoff_(options.initial_backoff), max_(options.max_backoff) {}
  // Called after each failed attempt; the pause before the next (zero until a
  // round of `replicas` failures is complete), jittered +-50%.
  absl::Duration OnFailure(size_t replicas);
  // A whole round failed at once (nobody knows a leader): the pause.
  absl::Duration OnRoundFailed();

 private:
  absl::Duration backoff_;
  const absl::Duration max_;
  size_t failures_this_round_ = 0;
};

// A session as the client sees it: what a later client needs to resume it.
struct SessionState {
  uint64_t client_id = 0;  // 0: no session
  int64_t created_unix_micros = 0;
  uint64_t last_sequence = 0;  // the last number used (0: none yet)
};

// The client side of a session: picks the id (random) and the creation time,
// numbers the commands. Thread-safe; one command at a time.
class ClientSession {
 public:
  // A new session, or `resume` (a session of an earlier client) if its
  // client_id is nonzero.
  explicit ClientSession(SessionState resume = {});

  // The next command's reference (a new session starts at sequence 1).
  rsm::pb::SessionRef Next() ABSL_LOCKS_EXCLUDED(mu_);
  // The servers refused `ref`'s session as unknown: start a new session
  // created after `watermark_unix_micros` (unless that already happened).
  void Renew(const rsm::pb::SessionRef& ref, int64_t watermark_unix_micros)
      ABSL_LOCKS_EXCLUDED(mu_);
  SessionState state() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void StartLocked(int64_t after_unix_micros) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  SessionState state_ ABSL_GUARDED_BY(mu_);
};

// One operation against a replica group: retried until an attempt succeeds,
// fails finally, or the deadline passes. A service's client subclasses it to
// say how an attempt is sent (Send) and what to do with the outcome (Done);
// with a ClientSession, the operation is a write under that session: it is
// stamped with the session's next sequence number, and a refusal of the
// session as unknown (ABORTED) renews the session and, when no earlier attempt
// can have been applied, sends the command again under the new one.
//
// One object per operation and no other allocation on the common path (an
// attempt at the cached leader that succeeds): the hot path of kvbench.
class RetryingCall : public std::enable_shared_from_this<RetryingCall> {
 public:
  // `transport` must outlive the call; `session` too, if not null. `name`
  // names the operation in errors ("put"); a string literal.
  RetryingCall(ReplicaTransport* transport, std::shared_ptr<LeaderCache> leader,
               const RetryOptions& options, const char* name, ClientSession* session = nullptr);
  virtual ~RetryingCall() = default;
  RetryingCall(const RetryingCall&) = delete;
  RetryingCall& operator=(const RetryingCall&) = delete;

  // Starts the operation (its deadline runs from now). Call once, on an
  // object owned by a shared_ptr. `taken_over`: only start the clock and
  // stamp the command; the subclass Retargets and Resumes when it knows where
  // to send it (a sharded client reading the configuration first).
  void Start(bool taken_over = false);

 protected:
  // Sends one attempt to replica `replica`, to end by `deadline`, stamped with
  // ref() if the call has a session; must lead to exactly one OnReply, on any
  // thread, possibly inline.
  virtual void Send(size_t replica, absl::Time deadline) = 0;
  // The outcome: OK, a final error, or kDeadlineExceeded (the message names the
  // replica and the last error). Called exactly once.
  virtual void Done(Reply reply) = 0;

  void OnReply(Reply reply);
  // The session reference of the command being sent (with a session).
  const rsm::pb::SessionRef& ref() const { return ref_; }
  absl::Time deadline() const { return deadline_; }

  // For clients of sharded services, whose operation may have to move to
  // another replica group. Called with a final error, or with the last error
  // of a round in which no replica of the group could be reached or knew a
  // leader (`round_failed`). Return true to take over: the subclass then
  // calls Retarget (if the group changed) and Resume, from any thread; the
  // command keeps its session reference. Default: false.
  virtual bool Reroute(const Reply& reply, bool round_failed) { return false; }
  // Sends the next attempts to another group. Only while the call is taken
  // over (or before Start).
  void Retarget(ReplicaTransport* transport, std::shared_ptr<LeaderCache> leader);
  // Continues a taken-over call after `pause` (or ends it at its deadline).
  void Resume(absl::Duration pause);
  // Ends a taken-over call with `reply`.
  void Abandon(Reply reply) { Finish(std::move(reply)); }

 private:
  size_t n() const { return leader_->endpoints().size(); }
  void Next();
  void Attempt(size_t replica);
  // After `pause` (zero: now, unless the stack is deep), Next().
  void Later(absl::Duration pause);
  void Probe();
  void OnProbe(uint64_t round, size_t replica, absl::StatusOr<rsm::pb::StatusResponse> status);
  // Continues the chain once a probe round is settled: an attempt at `found`,
  // or (kUnknown) the round failed with `why`.
  void AfterProbe(size_t found, std::string why);
  void Finish(Reply reply);

  // Changed only by Retarget, while no attempt or probe is in flight.
  ReplicaTransport* transport_;
  std::shared_ptr<LeaderCache> leader_;
  const RetryOptions options_;
  const char* const name_;
  ClientSession* const session_;
  absl::Time deadline_;
  rsm::pb::SessionRef ref_;
  // The attempt chain (one attempt or one leader search at a time) touches
  // these without a lock: each step happens after the previous one through
  // the transport's own synchronization.
  size_t target_ = 0;
  RetryBackoff backoff_;
  std::string last_error_ = "no attempt made";
  // An attempt of the current command ended with its outcome open (timed out,
  // connection lost, leadership lost), so it may have been applied.
  bool maybe_applied_ = false;
  bool resent_ = false;
  // The leader search: answers from several threads at once.
  absl::Mutex mu_;
  uint64_t probe_round_ ABSL_GUARDED_BY(mu_) = 0;
  size_t probes_pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool probe_settled_ ABSL_GUARDED_BY(mu_) = false;
  // Probe() is still sending the round's probes. A probe answered meanwhile
  // (on another thread, or inline) that settles the round leaves the outcome
  // here, and Probe() continues the chain after its loop: the chain may end
  // the operation, after which the caller may destroy the transport that the
  // loop is still using.
  bool probe_launching_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<std::pair<size_t, std::string>> probe_outcome_ ABSL_GUARDED_BY(mu_);
  std::string probe_error_ ABSL_GUARDED_BY(mu_);
};

// ---- gRPC helpers ----

// Parses "H:P,H:P,..." into endpoints; kInvalidArgument on an empty list or a
// malformed entry.
absl::StatusOr<std::vector<std::string>> ParseEndpoints(const std::string& list);

// A channel to `endpoint` with the clerks' settings. Channels made with
// distinct `connection_id`s use distinct TCP connections. `credentials`: TLS
// (common/tls.h); null: plaintext.
std::shared_ptr<grpc::Channel> MakeChannel(
    const std::string& endpoint, int connection_id = 0,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials = nullptr);

// An operation that sends one request message, re-sent (stamped by `stamp`
// with the session's reference, for writes) through Transport::Send(replica,
// Request, deadline, std::function<void(Response)>) until it succeeds; the
// service's clients (KvClient, CtrlClient) are made of these, and the sharded
// client's calls (ShardedKvCall) derive from it to move between groups.
// Response has a `status()` ReplyStatus.
template <typename Transport, typename Request, typename Response>
class TypedCall : public RetryingCall {
 public:
  using StampFn = void (*)(Request&, const rsm::pb::SessionRef&);
  using DoneFn = std::function<void(absl::StatusOr<Response>)>;

  // Makes and starts one. `session` null: no session (reads).
  static void Start(Transport* transport, std::shared_ptr<LeaderCache> leader,
                    const RetryOptions& options, const char* name, ClientSession* session,
                    StampFn stamp, Request request, DoneFn done) {
    std::make_shared<TypedCall>(transport, std::move(leader), options, name, session, stamp,
                                std::move(request), std::move(done))
        ->RetryingCall::Start();
  }

  // `transport` may be null for a call that is taken over (started with
  // RetryingCall::Start(true)) until it Retargets.
  TypedCall(Transport* transport, std::shared_ptr<LeaderCache> leader, const RetryOptions& options,
            const char* name, ClientSession* session, StampFn stamp, Request request, DoneFn done)
      : RetryingCall(transport, std::move(leader), options, name, session),
        transport_(transport),
        stamp_(stamp),
        request_(std::move(request)),
        done_(std::move(done)) {}

 protected:
  // RetryingCall::Retarget to another group's transport of this service.
  void Retarget(Transport* transport, std::shared_ptr<LeaderCache> leader) {
    RetryingCall::Retarget(transport, std::move(leader));
    transport_ = transport;
  }
  const Request& request() const { return request_; }

 private:
  void Send(size_t replica, absl::Time deadline) override {
    if (stamp_ != nullptr) stamp_(request_, ref());
    // The shared_ptr alone fits std::function's inline storage: no allocation.
    auto self = std::static_pointer_cast<TypedCall>(shared_from_this());
    transport_->Send(replica, request_, deadline, [self](Response resp) {
      Reply r = ToReply(resp.status());
      if (r.status.ok()) self->response_ = std::move(resp);
      self->OnReply(std::move(r));
    });
  }

  void Done(Reply reply) override {
    if (!reply.status.ok()) return done_(std::move(reply.status));
    done_(std::move(response_));
  }

  Transport* transport_;  // changes only by Retarget, while taken over
  const StampFn stamp_;
  Request request_;
  Response response_;
  const DoneFn done_;
};

// One operation at a time for a blocking clerk (its session numbers its
// commands in order), without a mutex held across the operation's calls and
// back-off: a caller waits for its turn, then runs with no lock held.
class OneOperationAtATime {
 public:
  class Turn {
   public:
    explicit Turn(OneOperationAtATime& gate) : gate_(gate) {
      absl::MutexLock lock(&gate_.mu_);
      gate_.mu_.Await(absl::Condition(
          +[](bool* busy) { return !*busy; }, &gate_.busy_));
      gate_.busy_ = true;
    }
    ~Turn() {
      absl::MutexLock lock(&gate_.mu_);
      gate_.busy_ = false;
    }
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;

   private:
    OneOperationAtATime& gate_;
  };

 private:
  absl::Mutex mu_;
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
};

// Runs an asynchronous call and waits for its result: `start(callback)`.
template <typename T, typename Start>
T Await(Start start) {
  T result;
  absl::Notification done;
  start([&](T r) {
    result = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

// The calls a transport has in flight, so that it can cancel them when it
// goes away instead of waiting for their deadlines (a probe of an endpoint
// that drops packets would otherwise hold a one-shot kvctl for its timeout).
class CallTracker {
 public:
  ~CallTracker() { Close(); }
  // Cancels every call in flight, waits until their callbacks have run, and
  // refuses new calls. Idempotent.
  void Close() ABSL_LOCKS_EXCLUDED(mu_);
  // A context for a new call (nullptr once closing); Finish it from the
  // call's callback, after which it is deleted.
  grpc::ClientContext* Begin() ABSL_LOCKS_EXCLUDED(mu_);
  void Finish(grpc::ClientContext* ctx) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Mutex mu_;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<grpc::ClientContext*, std::unique_ptr<grpc::ClientContext>> calls_
      ABSL_GUARDED_BY(mu_);
};

// Calls Replica.Status on `stub` with the callback API, tracked by `calls`.
void ProbeReplica(rsm::pb::Replica::Stub* stub, CallTracker* calls, absl::Time deadline,
                  std::function<void(absl::StatusOr<rsm::pb::StatusResponse>)> done);

// The gRPC side every unary clerk shares: a channel per replica, leader
// probes, a timer, and tracked calls (cancelled, not waited for, when the
// clerk goes away). A service's transport forwards ReplicaTransport's methods
// here and issues its own calls through Call().
class GrpcReplicas {
 public:
  // `channels`: one per endpoint, or empty to open them here (with
  // `credentials`; null: plaintext).
  explicit GrpcReplicas(std::vector<std::string> endpoints,
                        std::vector<std::shared_ptr<grpc::Channel>> channels = {},
                        std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

  const std::vector<std::string>& endpoints() const { return endpoints_; }
  const std::shared_ptr<grpc::Channel>& channel(size_t i) const { return channels_[i]; }
  void Probe(size_t i, absl::Time deadline,
             std::function<void(absl::StatusOr<rsm::pb::StatusResponse>)> done);
  void RunAt(absl::Time when, std::function<void()> fn);

  // One unary call: `start(ctx, finish)` issues it with the stub's async()
  // API on a tracked context that has `deadline`; `done` then gets its status
  // as a ReplyStatus (with the hint from the trailers).
  using StartFn = std::function<void(grpc::ClientContext*, std::function<void(grpc::Status)>)>;
  void Call(absl::Time deadline, StartFn start, std::function<void(rsm::pb::ReplyStatus)> done);

 private:
  const std::vector<std::string> endpoints_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<rsm::pb::Replica::Stub>> replica_;
  // Destroyed in reverse order: the timer's thread first, then the calls in
  // flight are cancelled and their callbacks waited for, then the stubs.
  CallTracker calls_;
  common::Timer timer_;
};

// ---- Membership (Raft configuration changes; proto/rsm.proto) ----

// One replica's own view of its group's configuration (Replica.MemberList,
// answered locally: no retry, no leader redirection), bounded by `timeout`;
// errors name the endpoint.
absl::StatusOr<rsm::pb::MemberListResponse> ReplicaMemberList(
    const std::string& endpoint, absl::Duration timeout,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials = nullptr);

// The configuration as the leader of the group at `endpoints` sees it (the
// newest one: a follower's may lag). The leader is found and followed as the
// clerks do, and an answer from a replica that is not the leader is retried,
// until options.operation_timeout.
absl::StatusOr<rsm::pb::MemberListResponse> LeaderMemberList(
    const std::vector<std::string>& endpoints, const RetryOptions& options,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials = nullptr);

// One membership change, made at the leader.
struct MemberChange {
  enum class Kind { kAdd, kPromote, kRemove };
  Kind kind = Kind::kAdd;
  uint64_t id = 0;
  std::string address;   // kAdd: the new member's Raft address, HOST:PORT
  bool learner = false;  // kAdd: as a learner (non-voting) rather than a voter
};

// Makes `change` at the leader of the group at `endpoints` and returns the
// configuration after it (members by id). Retried as the clerks retry (leader
// search, hints, back-off) while the leader is unknown or moves, and while it
// answers UNAVAILABLE because another change is in progress or it was just
// elected, until options.operation_timeout. The servers' refusals end it:
// INVALID_ARGUMENT, ALREADY_EXISTS, NOT_FOUND, FAILED_PRECONDITION (the last
// voter; a removed id, since ids are never reused; a learner not caught up).
//
// A change is not idempotent: an attempt whose outcome is unknown (timed out,
// leadership lost on the way) may have been applied, and then its retry is
// refused (ALREADY_EXISTS for an add, NOT_FOUND for a remove, ...). So after
// such an attempt a refusal is checked against the leader's member list: if
// it shows the change made, the change succeeded.
absl::StatusOr<std::vector<rsm::pb::Member>> ChangeMembership(
    const std::vector<std::string>& endpoints, const MemberChange& change,
    const RetryOptions& options,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials = nullptr);

}  // namespace ds::client
