// KvService.Batch as kvraft-server serves it, against real processes: the
// per-request validation, the answers of the error contract (proto/rsm.proto)
// carried in ReplyStatus, and many requests in flight on one stream. The
// requests travel on a raw stream driven by the test, so that these tests
// depend on the server only (the stream clients, client/kv_stream.h, are
// tested in tests/client/).
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/kv.grpc.pb.h"
#include "raft/rsm/session_table.h"
#include "tests/kvraft/process_cluster.h"

namespace ds::kv {
namespace {

using testing::kKvServer;
using testing::ProcessCluster;

// Raft timing for tests: elections within about a second (as process_test.cc).
// The request limit is small so that a value over it is cheap to send.
const std::vector<std::string> kFastRaft = {"--tick-interval=50ms", "--election-ticks=10",
                                            "--log-level=warn", "--max-request-bytes=4096"};

absl::StatusCode CodeOf(const pb::KvResponse& r) {
  return static_cast<absl::StatusCode>(r.status().code());
}

// One healthy 3-replica cluster for the tests that neither kill, pause nor
// restart a replica nor depend on the session table's bounds (each uses keys
// and sessions of its own); started at first use, killed and removed at exit.
ProcessCluster& HealthyCluster() {
  static const std::unique_ptr<ProcessCluster> cluster = [] {
    auto c = std::make_unique<ProcessCluster>(kKvServer, 3, kFastRaft);
    if (absl::Status st = c->WaitAllHealthy(); !st.ok()) ADD_FAILURE() << st;
    return c;
  }();
  return *cluster;
}

// One Batch stream to one replica, driven from the test thread with gRPC's
// synchronous API. The whole stream ends at most `limit` after it opens, so
// no read waits longer.
class RawStream {
 public:
  explicit RawStream(const std::string& endpoint, absl::Duration limit = absl::Seconds(30))
      : stub_(pb::KvService::NewStub(
            grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials()))) {
    ctx_.set_deadline(absl::ToChronoTime(absl::Now() + limit));
    stream_ = stub_->Batch(&ctx_);
  }

  ~RawStream() {
    ctx_.TryCancel();
    pb::KvResponseBatch ignored;
    while (stream_->Read(&ignored)) {
    }
    stream_->Finish();
  }

  // Sends `requests` as one stream message.
  bool Send(const std::vector<pb::KvRequest>& requests) {
    pb::KvRequestBatch batch;
    for (const pb::KvRequest& r : requests) *batch.add_requests() = r;
    return stream_->Write(batch);
  }

  // Reads until `n` responses have come, or the stream ended.
  std::vector<pb::KvResponse> Receive(size_t n) {
    std::vector<pb::KvResponse> out;
    pb::KvResponseBatch batch;
    while (out.size() < n && stream_->Read(&batch)) {
      for (pb::KvResponse& r : *batch.mutable_responses()) out.push_back(std::move(r));
    }
    return out;
  }

 private:
  std::unique_ptr<pb::KvService::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<pb::KvRequestBatch, pb::KvResponseBatch>> stream_;
};

// Sends `request` alone on a new stream to `endpoint` and waits for its
// answer; nullopt if none came (the test fails then).
std::optional<pb::KvResponse> SendOne(const std::string& endpoint, pb::KvRequest request) {
  request.set_id(1);
  request.set_timeout_ms(5000);
  RawStream stream(endpoint, absl::Seconds(20));
  if (!stream.Send({request})) {
    ADD_FAILURE() << "the stream to " << endpoint << " broke";
    return std::nullopt;
  }
  std::vector<pb::KvResponse> responses = stream.Receive(1);
  if (responses.size() != 1) {
    ADD_FAILURE() << "no answer from " << endpoint;
    return std::nullopt;
  }
  EXPECT_EQ(responses[0].id(), 1u) << "the response does not echo the request's id";
  return responses[0];
}

// Sends `request` to whichever replica leads, again (the same request: a
// retry) while the answer is UNAVAILABLE or DEADLINE_EXCEEDED, that is while
// leadership moves, for up to 20 s.
std::optional<pb::KvResponse> SendToLeader(ProcessCluster& cluster, const pb::KvRequest& request) {
  std::optional<pb::KvResponse> resp;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    const int leader = cluster.WaitForLeader();
    if (leader < 0) break;
    resp = SendOne(cluster.endpoints()[leader], request);
    if (!resp) return resp;
    if (CodeOf(*resp) != absl::StatusCode::kUnavailable &&
        CodeOf(*resp) != absl::StatusCode::kDeadlineExceeded) {
      return resp;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return resp;
}

// A session created now, for writes that must be accepted.
rsm::pb::SessionRef NewSession(uint64_t client_id, uint64_t sequence = 1) {
  return rsm::MakeSessionRef(client_id, absl::ToUnixMicros(absl::Now()), sequence);
}

pb::KvRequest MakeGet(std::string key) {
  pb::KvRequest r;
  r.mutable_get()->set_key(std::move(key));
  return r;
}

pb::KvRequest MakePut(std::string key, std::string value, const rsm::pb::SessionRef& session) {
  pb::KvRequest r;
  pb::PutRequest* put = r.mutable_put();
  put->set_key(std::move(key));
  put->set_value(std::move(value));
  *put->mutable_session() = session;
  return r;
}

// ---- per-request validation (any replica, before anything is proposed) ----

TEST(Batch, EmptyKeyIsInvalidArgument) {
  ProcessCluster& cluster = HealthyCluster();
  auto put = SendOne(cluster.endpoints()[0], MakePut("", "v", NewSession(1)));
  ASSERT_TRUE(put.has_value());
  EXPECT_EQ(CodeOf(*put), absl::StatusCode::kInvalidArgument) << put->status().message();
  auto get = SendOne(cluster.endpoints()[0], MakeGet(""));
  ASSERT_TRUE(get.has_value());
  EXPECT_EQ(CodeOf(*get), absl::StatusCode::kInvalidArgument) << get->status().message();
}

TEST(Batch, KeyAndValueOverTheRequestLimitAreInvalidArgument) {
  ProcessCluster& cluster = HealthyCluster();  // --max-request-bytes=4096
  auto resp =
      SendOne(cluster.endpoints()[0], MakePut("big", std::string(5000, 'x'), NewSession(1)));
  ASSERT_TRUE(resp.has_value());
  EXPECT_EQ(CodeOf(*resp), absl::StatusCode::kInvalidArgument) << resp->status().message();
}

TEST(Batch, RejectedWriteCarriesNoResult) {
  ProcessCluster& cluster = HealthyCluster();
  // As for a write that fails once proposed: only a successful response has a
  // result, whatever the reason of the refusal.
  pb::KvRequest append;
  append.mutable_append()->set_value("v");
  *append.mutable_append()->mutable_session() = NewSession(1);  // but no key
  pb::KvRequest del;
  del.mutable_delete_()->set_key("k");  // but no session
  for (const pb::KvRequest& req :
       {MakePut("", "v", NewSession(1)), MakePut("big", std::string(5000, 'x'), NewSession(1)),
        append, del}) {
    auto resp = SendOne(cluster.endpoints()[0], req);
    ASSERT_TRUE(resp.has_value());
    ASSERT_EQ(CodeOf(*resp), absl::StatusCode::kInvalidArgument) << resp->status().message();
    EXPECT_EQ(resp->result_case(), pb::KvResponse::RESULT_NOT_SET)
        << "refused (" << resp->status().message()
        << ") but carries a result: " << resp->ShortDebugString();
  }
}

TEST(Batch, WriteWithoutACompleteSessionIsInvalidArgument) {
  ProcessCluster& cluster = HealthyCluster();
  const int64_t now = absl::ToUnixMicros(absl::Now());
  pb::KvRequest no_session = MakePut("k", "v", rsm::pb::SessionRef());
  no_session.mutable_put()->clear_session();
  for (const pb::KvRequest& req : {MakePut("k", "v", rsm::MakeSessionRef(0, now, 1)),
                                   MakePut("k", "v", rsm::MakeSessionRef(7, 0, 1)),
                                   MakePut("k", "v", rsm::MakeSessionRef(7, now, 0)), no_session}) {
    auto resp = SendOne(cluster.endpoints()[0], req);
    ASSERT_TRUE(resp.has_value());
    EXPECT_EQ(CodeOf(*resp), absl::StatusCode::kInvalidArgument)
        << req.ShortDebugString() << ": " << resp->status().message();
  }
}

TEST(Batch, RequestWithoutAnOperationIsInvalidArgument) {
  ProcessCluster& cluster = HealthyCluster();
  auto resp = SendOne(cluster.endpoints()[0], pb::KvRequest());
  ASSERT_TRUE(resp.has_value());
  EXPECT_EQ(CodeOf(*resp), absl::StatusCode::kInvalidArgument) << resp->status().message();
}

// ---- answers of the error contract ----

TEST(Batch, SessionCreatedFarAheadOfTheLeadersClockIsInvalidArgument) {
  ProcessCluster& cluster = HealthyCluster();  // --max-clock-skew: 10 minutes
  const int64_t in_an_hour = absl::ToUnixMicros(absl::Now() + absl::Hours(1));
  auto resp =
      SendToLeader(cluster, MakePut("future", "v", rsm::MakeSessionRef(0xF07, in_an_hour, 1)));
  ASSERT_TRUE(resp.has_value());
  EXPECT_EQ(CodeOf(*resp), absl::StatusCode::kInvalidArgument) << resp->status().message();
  auto get = SendToLeader(cluster, MakeGet("future"));
  ASSERT_TRUE(get.has_value());
  ASSERT_EQ(CodeOf(*get), absl::StatusCode::kOk) << get->status().message();
  EXPECT_FALSE(get->get().found()) << "the refused write was applied";
}

TEST(Batch, WriteOfAnUnknownSessionAtOrBelowTheWatermarkIsAborted) {
  // A session table of one: opening a second session forgets the first.
  std::vector<std::string> flags = kFastRaft;
  flags.push_back("--max-sessions=1");
  ProcessCluster cluster(kKvServer, 1, flags);
  ASSERT_TRUE(cluster.WaitAllHealthy().ok());
  const int64_t first_created = absl::ToUnixMicros(absl::Now()) - 1000;
  auto first =
      SendToLeader(cluster, MakePut("first", "1", rsm::MakeSessionRef(0xA1, first_created, 1)));
  ASSERT_TRUE(first.has_value());
  ASSERT_EQ(CodeOf(*first), absl::StatusCode::kOk) << first->status().message();
  auto second = SendToLeader(cluster, MakePut("second", "2", NewSession(0xB2)));
  ASSERT_TRUE(second.has_value());
  ASSERT_EQ(CodeOf(*second), absl::StatusCode::kOk) << second->status().message();

  // A session never seen, created when the forgotten one was: refused even
  // at sequence 1, with the watermark for the client's next session.
  auto resp =
      SendToLeader(cluster, MakePut("unknown", "v", rsm::MakeSessionRef(0xC3, first_created, 1)));
  ASSERT_TRUE(resp.has_value());
  EXPECT_EQ(CodeOf(*resp), absl::StatusCode::kAborted) << resp->status().message();
  EXPECT_EQ(resp->status().session_watermark_unix_micros(), first_created);
  EXPECT_EQ(resp->result_case(), pb::KvResponse::RESULT_NOT_SET);
  auto get = SendToLeader(cluster, MakeGet("unknown"));
  ASSERT_TRUE(get.has_value());
  ASSERT_EQ(CodeOf(*get), absl::StatusCode::kOk) << get->status().message();
  EXPECT_FALSE(get->get().found()) << "the refused write was applied";
}

TEST(Batch, FollowerAnswersUnavailableWithTheLeadersAddress) {
  ProcessCluster& cluster = HealthyCluster();
  const int leader = cluster.WaitForLeader();
  ASSERT_GE(leader, 0);
  const int follower = (leader + 1) % cluster.size();
  // The follower learns of the leader from its first message.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    auto st = cluster.Status(follower);
    if (st.ok() && st->leader_id() == static_cast<uint64_t>(leader + 1)) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  auto get = SendOne(cluster.endpoints()[follower], MakeGet("k"));
  ASSERT_TRUE(get.has_value());
  EXPECT_EQ(CodeOf(*get), absl::StatusCode::kUnavailable) << get->status().message();
  EXPECT_EQ(get->status().leader_id(), static_cast<uint64_t>(leader + 1));
  EXPECT_EQ(get->status().leader_address(), cluster.endpoints()[leader]);
  EXPECT_TRUE(get->status().not_applied());
  // A write is refused the same way, before anything is proposed.
  auto put = SendOne(cluster.endpoints()[follower], MakePut("k", "v", NewSession(0xF011)));
  ASSERT_TRUE(put.has_value());
  EXPECT_EQ(CodeOf(*put), absl::StatusCode::kUnavailable) << put->status().message();
  EXPECT_EQ(put->status().leader_address(), cluster.endpoints()[leader]);
  EXPECT_TRUE(put->status().not_applied());
}

TEST(Batch, ManyRequestsInFlightOnOneStreamEachGetTheirOwnAnswer) {
  ProcessCluster& cluster = HealthyCluster();
  constexpr int kKeys = 20;
  const rsm::pb::SessionRef writer = NewSession(0x3A11);
  for (int k = 0; k < kKeys; ++k) {
    rsm::pb::SessionRef ref = writer;
    ref.set_sequence(k + 1);
    auto put =
        SendToLeader(cluster, MakePut(absl::StrCat("own-", k), absl::StrCat("value-", k), ref));
    ASSERT_TRUE(put.has_value());
    ASSERT_EQ(CodeOf(*put), absl::StatusCode::kOk) << put->status().message();
  }
  const int leader = cluster.WaitForLeader();
  ASSERT_GE(leader, 0);

  // All sent before any answer is read, several to a message: answers come
  // back in completion order, so each must name its own request.
  constexpr int kMessages = 4, kPerMessage = 100;
  RawStream stream(cluster.endpoints()[leader], absl::Seconds(30));
  std::map<uint64_t, int> key_of;  // request id -> key number
  for (int m = 0; m < kMessages; ++m) {
    std::vector<pb::KvRequest> requests;
    for (int i = 0; i < kPerMessage; ++i) {
      const uint64_t id = 1000 + m * kPerMessage + i;
      const int k = static_cast<int>(id % kKeys);
      pb::KvRequest r = MakeGet(absl::StrCat("own-", k));
      r.set_id(id);
      key_of[id] = k;
      requests.push_back(std::move(r));
    }
    ASSERT_TRUE(stream.Send(requests));
  }
  const std::vector<pb::KvResponse> responses = stream.Receive(kMessages * kPerMessage);
  ASSERT_EQ(responses.size(), static_cast<size_t>(kMessages * kPerMessage));
  std::set<uint64_t> ids;
  int failed = 0, wrong = 0;
  std::string example;
  for (const pb::KvResponse& r : responses) {
    ids.insert(r.id());
    auto it = key_of.find(r.id());
    if (it == key_of.end()) {
      ++wrong;
      example = absl::StrCat("an answer to request ", r.id(), ", never sent");
    } else if (CodeOf(r) != absl::StatusCode::kOk) {
      ++failed;
      example = r.status().message();
    } else if (r.get().value() != absl::StrCat("value-", it->second)) {
      ++wrong;
      example = absl::StrCat("own-", it->second, " read ", r.get().value());
    }
  }
  EXPECT_EQ(ids.size(), responses.size()) << "a request was answered twice";
  EXPECT_EQ(failed, 0) << example;
  EXPECT_EQ(wrong, 0) << "an answer reached the wrong request: " << example;
}

}  // namespace
}  // namespace ds::kv
