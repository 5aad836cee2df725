// A shardkv group's Raft membership changes with the real binaries, and the
// shard controller follows: a controller of 3 shardctrler-server processes
// and group 100 of 3 shardkv-server processes on loopback. A 4th replica is
// added as a learner (Replica.MemberAdd, called directly), started with
// --initial-cluster-state=existing on an empty data directory, promoted, and
// an old member is removed (a follower, or the leader itself). The group's
// leader then makes the controller list exactly its voters' client addresses
// (ShardCtrler.Servers, from ShardKvDriver), and a clerk that knows only the
// controller still reads every key and writes, with the removed member gone.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/ctrl_client.h"
#include "client/shardkv_client.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/rsm.grpc.pb.h"
#include "tests/common/process_cluster.h"

namespace ds::shardkv {
namespace {

using ::ds::testing::ProcessCluster;
using ::ds::testing::ShardedProcessCluster;

constexpr uint64_t kGid = 100;

// Runs one membership change on the group's leader (found again after every
// failure: a new leader, a change still in progress, a learner not caught up
// yet), until it succeeds or `limit` passes. `already` is the code of a
// change that an earlier attempt made (its answer lost): success too.
absl::Status ChangeMembers(
    ProcessCluster& group, absl::StatusCode already,
    const std::function<grpc::Status(rsm::pb::Replica::Stub&, grpc::ClientContext*)>& call,
    absl::Duration limit = absl::Seconds(40)) {
  absl::Status last = absl::DeadlineExceededError("no leader");
  for (const absl::Time deadline = absl::Now() + limit; absl::Now() < deadline;
       absl::SleepFor(absl::Milliseconds(200))) {
    const int leader = group.Leader();
    if (leader < 0) continue;
    auto stub = rsm::pb::Replica::NewStub(
        grpc::CreateChannel(group.endpoints()[leader], grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    const grpc::Status st = call(*stub, &ctx);
    if (st.ok() || static_cast<absl::StatusCode>(st.error_code()) == already) {
      return absl::OkStatus();
    }
    last = absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
  }
  return last;
}

std::vector<std::string> ServersOf(const ctrl::pb::Config& config, uint64_t gid) {
  for (const ctrl::pb::Group& g : config.groups()) {
    if (g.gid() == gid) return {g.servers().begin(), g.servers().end()};
  }
  return {};
}

// Polls the controller until its latest configuration lists `want` for kGid;
// returns that configuration (or the last one seen).
ctrl::pb::Config WaitForServers(client::CtrlClerk& ctrl, const std::vector<std::string>& want,
                                absl::Duration limit = absl::Seconds(30)) {
  ctrl::pb::Config last;
  for (const absl::Time deadline = absl::Now() + limit; absl::Now() < deadline;
       absl::SleepFor(absl::Milliseconds(100))) {
    absl::StatusOr<ctrl::pb::Config> c = ctrl.Query(-1);
    if (!c.ok()) continue;
    last = *std::move(c);
    if (ServersOf(last, kGid) == want) return last;
  }
  return last;
}

// The scenario; `remove_leader`: the old member removed is the group's leader
// (it hands over and steps down, and its successor updates the list), else a
// follower.
void ReplaceAMember(bool remove_leader) {
  ShardedProcessCluster cluster(ShardedProcessCluster::Options::Fast({kGid}));
  ASSERT_TRUE(cluster.WaitAllHealthy().ok()) << cluster.Logs();
  ProcessCluster& group = cluster.group(kGid);
  const std::vector<std::string> old_servers = group.endpoints();

  auto ctrl = ::ds::testing::MustCreate<client::CtrlClerk>(
      client::ClerkOptions{.endpoints = cluster.controllers().endpoints(),
                           .operation_timeout = absl::Seconds(20),
                           .attempt_timeout = absl::Milliseconds(500)});
  // Joined in another order than the members' ids: kept as long as the
  // members stay the same (no configuration for a mere reordering).
  const std::vector<std::string> joined_servers(old_servers.rbegin(), old_servers.rend());
  absl::StatusOr<uint64_t> joined = ctrl->Join({{kGid, joined_servers}});
  ASSERT_TRUE(joined.ok()) << joined.status() << "\n" << cluster.Logs();
  ASSERT_EQ(*joined, 1u);

  const client::ClerkOptions clerk_options{.endpoints = cluster.controllers().endpoints(),
                                           .operation_timeout = absl::Seconds(20),
                                           .attempt_timeout = absl::Milliseconds(500)};
  {
    auto clerk = ::ds::testing::MustCreate<client::ShardKvClerk>(clerk_options);
    for (int k = 0; k < 10; ++k) {
      absl::Status st = clerk->Put(absl::StrCat("k", k), absl::StrCat("v", k));
      ASSERT_TRUE(st.ok()) << "Put k" << k << ": " << st << "\n" << cluster.Logs();
    }
  }

  // A 4th replica: added as a learner, started empty, promoted.
  const int added = group.Add();
  const uint64_t added_id = static_cast<uint64_t>(added) + 1;
  const std::string added_address = group.endpoints()[added];
  absl::Status st = ChangeMembers(group, absl::StatusCode::kAlreadyExists,
                                  [&](rsm::pb::Replica::Stub& stub, grpc::ClientContext* ctx) {
                                    rsm::pb::MemberAddRequest req;
                                    req.set_id(added_id);
                                    req.set_address(added_address);
                                    req.set_learner(true);
                                    rsm::pb::MemberChangeResponse resp;
                                    return stub.MemberAdd(ctx, req, &resp);
                                  });
  ASSERT_TRUE(st.ok()) << "MemberAdd: " << st << "\n" << cluster.Logs();
  group.StartAs(added, added_id, absl::StrCat(group.peers_flag(), ",", group.peer(added)),
                {"--initial-cluster-state=existing"});
  ASSERT_TRUE(group.WaitHealthy(added).ok()) << group.LogTail(added);
  // A learner is not listed: it serves nobody yet.
  absl::StatusOr<ctrl::pb::Config> during = ctrl->Query(-1);
  ASSERT_TRUE(during.ok()) << during.status();
  EXPECT_EQ(ServersOf(*during, kGid), joined_servers);
  EXPECT_EQ(during->num(), 1u) << during->ShortDebugString();

  st = ChangeMembers(group, absl::StatusCode::kAlreadyExists,
                     [&](rsm::pb::Replica::Stub& stub, grpc::ClientContext* ctx) {
                       rsm::pb::MemberPromoteRequest req;
                       req.set_id(added_id);
                       rsm::pb::MemberChangeResponse resp;
                       return stub.MemberPromote(ctx, req, &resp);
                     });
  ASSERT_TRUE(st.ok()) << "MemberPromote: " << st << "\n" << cluster.Logs();
  std::vector<std::string> four = old_servers;
  four.push_back(added_address);
  ctrl::pb::Config c = WaitForServers(*ctrl, four);
  ASSERT_EQ(ServersOf(c, kGid), four) << c.ShortDebugString() << "\n" << cluster.Logs();

  // Remove an old member, then stop it.
  const int leader = group.WaitForLeader();
  ASSERT_GE(leader, 0);
  // (An old member in any case: if the new one leads, a follower.)
  const int removed = remove_leader && leader != added ? leader : (leader == 0 ? 1 : 0);
  st = ChangeMembers(group, absl::StatusCode::kNotFound,
                     [&](rsm::pb::Replica::Stub& stub, grpc::ClientContext* ctx) {
                       rsm::pb::MemberRemoveRequest req;
                       req.set_id(static_cast<uint64_t>(removed) + 1);
                       rsm::pb::MemberChangeResponse resp;
                       return stub.MemberRemove(ctx, req, &resp);
                     });
  ASSERT_TRUE(st.ok()) << "MemberRemove: " << st << "\n" << cluster.Logs();
  std::vector<std::string> want;
  for (int i = 0; i < group.size(); ++i) {
    if (i != removed) want.push_back(group.endpoints()[i]);
  }
  c = WaitForServers(*ctrl, want);
  ASSERT_EQ(ServersOf(c, kGid), want) << c.ShortDebugString() << "\n" << cluster.Logs();
  group.Kill(removed);
  // One configuration per change at most (join, promote, remove), and no
  // more once the list is right: the leader does not send it every pass.
  EXPECT_LE(c.num(), 3u) << c.ShortDebugString();
  for (int s = 0; s < c.shards_size(); ++s) EXPECT_EQ(c.shards(s), kGid) << "shard " << s;
  absl::SleepFor(absl::Seconds(1));
  absl::StatusOr<uint64_t> latest = ctrl->Latest();
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, c.num());

  // A clerk that knows only the controller: every key, and a new write.
  auto clerk = ::ds::testing::MustCreate<client::ShardKvClerk>(clerk_options);
  for (int k = 0; k < 10; ++k) {
    absl::StatusOr<client::GetResult> got = clerk->Get(absl::StrCat("k", k));
    ASSERT_TRUE(got.ok()) << "Get k" << k << ": " << got.status() << "\n" << cluster.Logs();
    EXPECT_TRUE(got->found);
    EXPECT_EQ(got->value, absl::StrCat("v", k));
  }
  ASSERT_TRUE(clerk->Append("k0", "+").ok()) << cluster.Logs();
  absl::StatusOr<client::GetResult> got = clerk->Get("k0");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->value, "v0+");
  // The group applies the configuration that only changed its list like any
  // other (nothing to move), the new replica included.
  uint64_t applied = 0;
  for (const absl::Time deadline = absl::Now() + absl::Seconds(10);
       applied < c.num() && absl::Now() < deadline; absl::SleepFor(absl::Milliseconds(100))) {
    absl::StatusOr<rsm::pb::StatusResponse> status = group.Status(added);
    if (status.ok()) applied = status->config_num();
  }
  EXPECT_EQ(applied, c.num()) << group.LogTail(added);
}

TEST(ShardKvMembershipProcess, ControllerListsTheGroupsNewMembersAndClientsFollow) {
  ReplaceAMember(/*remove_leader=*/false);
}

TEST(ShardKvMembershipProcess, AfterTheLeaderIsRemovedItsSuccessorUpdatesTheList) {
  ReplaceAMember(/*remove_leader=*/true);
}

}  // namespace
}  // namespace ds::shardkv
