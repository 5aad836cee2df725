// GrpcTransport: batches arrive in order, snapshots arrive whole through the
// chunked stream, and the sender is never blocked: an unreachable or stuck
// peer costs dropped messages reported as MSG_UNREACHABLE, not a stall.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/grpc_server.h"
#include "common/net.h"
#include "gtest/gtest.h"
#include "raft/transport/grpc_transport.h"

namespace ds::raft {
namespace {

constexpr absl::Duration kTimeout = absl::Seconds(10);

// Collects what a transport hands to its handler.
class Inbox {
 public:
  Transport::Handler handler() {
    return [this](pb::Message m) {
      absl::MutexLock lock(&mu_);
      messages_.push_back(std::move(m));
    };
  }
  // Waits until `n` messages of `type` arrived; returns them all.
  std::vector<pb::Message> WaitFor(pb::MessageType type, size_t n) {
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      size_t k = 0;
      for (const auto& m : messages_) k += m.type() == type;
      return k >= n;
    };
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&enough), kTimeout);
    std::vector<pb::Message> out;
    for (const auto& m : messages_) {
      if (m.type() == type) out.push_back(m);
    }
    return out;
  }

 private:
  absl::Mutex mu_;
  std::vector<pb::Message> messages_ ABSL_GUARDED_BY(mu_);
};

pb::Message Msg(pb::MessageType type, uint64_t from, uint64_t to, uint64_t index) {
  pb::Message m;
  m.set_type(type);
  m.set_from(from);
  m.set_to(to);
  m.set_term(1);
  m.set_index(index);
  return m;
}

// Transport 1 talks to transport 2, which serves on a reserved port.
struct Pair {
  explicit Pair(GrpcTransportOptions base = {}) {
    auto p1 = common::ReserveFreePort();
    auto p2 = common::ReserveFreePort();
    EXPECT_TRUE(p1.ok() && p2.ok());
    port1 = std::move(*p1);
    port2 = std::move(*p2);
    GrpcTransportOptions o1 = base;
    o1.id = 1;
    o1.peers = {{1, port1.address()}, {2, port2.address()}};
    GrpcTransportOptions o2 = o1;
    o2.id = 2;
    t1 = std::make_unique<GrpcTransport>(o1);
    t2 = std::make_unique<GrpcTransport>(o2);
    common::GrpcServerOptions so;
    so.listen_address = port2.address();
    server2 = std::make_unique<common::GrpcServer>(so);
    server2->AddService(t2->service());
    EXPECT_TRUE(server2->Start().ok());
    t1->Start(inbox1.handler());
    t2->Start(inbox2.handler());
  }
  ~Pair() {
    server2->Shutdown(absl::ZeroDuration());
    t1->Stop();
    t2->Stop();
  }
  common::PortReservation port1, port2;
  Inbox inbox1, inbox2;
  std::unique_ptr<GrpcTransport> t1, t2;
  std::unique_ptr<common::GrpcServer> server2;
};

TEST(GrpcTransport, DeliversMessagesInOrder) {
  Pair p;
  for (uint64_t i = 1; i <= 100; ++i) p.t1->Send({Msg(pb::MSG_APP, 1, 2, i)});
  auto got = p.inbox2.WaitFor(pb::MSG_APP, 100);
  ASSERT_EQ(got.size(), 100u);
  for (uint64_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].index(), i + 1);
  // Batching: far fewer RPCs than messages is typical, never more.
  EXPECT_LE(p.t1->send_calls(), 100u);
}

TEST(GrpcTransport, StreamsASnapshotInChunksAndReportsSuccess) {
  GrpcTransportOptions o;
  o.snapshot_chunk_bytes = 256 << 10;
  Pair p(o);
  pb::Message snap = Msg(pb::MSG_SNAP, 1, 2, 0);
  snap.mutable_snapshot()->mutable_metadata()->set_index(42);
  std::string data(3 * (1 << 20) + 12345, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 % 251);
  *snap.mutable_snapshot()->mutable_data() = data;
  p.t1->Send({snap});
  auto got = p.inbox2.WaitFor(pb::MSG_SNAP, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].snapshot().metadata().index(), 42u);
  EXPECT_TRUE(got[0].snapshot().data() == data);
  auto status = p.inbox1.WaitFor(pb::MSG_SNAP_STATUS, 1);
  ASSERT_EQ(status.size(), 1u);
  EXPECT_EQ(status[0].from(), 2u);
  EXPECT_FALSE(status[0].reject());
}

TEST(GrpcTransport, ReportsAPeerWithNoServerUnreachable) {
  Pair p;
  // Nobody serves transport 1's address: sending to it fails.
  p.t2->Send({Msg(pb::MSG_APP_RESP, 2, 1, 1)});
  auto got = p.inbox2.WaitFor(pb::MSG_UNREACHABLE, 1);
  ASSERT_GE(got.size(), 1u);
  EXPECT_EQ(got[0].from(), 1u);
  EXPECT_EQ(got[0].to(), 2u);
}

TEST(GrpcTransport, DropsInsteadOfBlockingWhenAPeerQueueIsFull) {
  // A peer that accepts TCP connections but never speaks HTTP/2: the first
  // call hangs until its deadline, so everything else piles up in the queue.
  auto port = common::ReserveFreePort();
  ASSERT_TRUE(port.ok());
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port->port()));
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 16), 0);

  GrpcTransportOptions o;
  o.id = 1;
  o.peers = {{2, port->address()}};
  o.max_queued_messages = 4;
  o.send_timeout = absl::Seconds(30);
  GrpcTransport t(o);
  Inbox inbox;
  t.Start(inbox.handler());
  const absl::Time start = absl::Now();
  std::vector<pb::Message> batch;
  for (uint64_t i = 1; i <= 50; ++i) batch.push_back(Msg(pb::MSG_APP, 1, 2, i));
  t.Send(batch);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1)) << "Send blocked";
  // At most the queue plus the one batch in flight got through.
  auto dropped = inbox.WaitFor(pb::MSG_UNREACHABLE, 50 - 4 - 4);
  EXPECT_GE(dropped.size(), 50u - 4 - 4);
  EXPECT_GE(t.dropped_messages(), 50u - 4 - 4);
  t.Stop();  // cancels the hung call rather than waiting 30 s
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  close(fd);
}

}  // namespace
}  // namespace ds::raft
