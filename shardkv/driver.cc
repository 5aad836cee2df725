#include "shardkv/driver.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/replica_client.h"
#include "shardkv/shardkv_service.h"

namespace ds::shardkv {

ShardKvDriver::ShardKvDriver(DriverOptions options, raft::Rsm* rsm, const ShardKvStateMachine* sm,
                             ConfigSource* controller, PeerGroups* groups,
                             std::shared_ptr<spdlog::logger> logger)
    : options_(options),
      rsm_(rsm),
      sm_(sm),
      controller_(controller),
      groups_(groups),
      log_(std::move(logger)) {}

ShardKvDriver::~ShardKvDriver() { Stop(); }

void ShardKvDriver::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void ShardKvDriver::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void ShardKvDriver::Loop() {
  while (!stop_.WaitForNotificationWithTimeout(options_.poll_interval)) {
    // Keep going while there is work (a configuration change with many
    // shards takes several passes), without waiting a poll interval between;
    // bounded, in case a proposal keeps being accepted without effect.
    for (int pass = 0; pass < 100 && !stop_.HasBeenNotified() && Step(); ++pass) {
    }
  }
}

bool ShardKvDriver::IsLeader() const { return rsm_->status().role == raft::Role::kLeader; }

absl::Status ShardKvDriver::Propose(const pb::ShardKvCommand& cmd) {
  return client::Await<absl::Status>([&](auto cb) {
    SubmitInternal(*rsm_, cmd, absl::Now() + options_.propose_timeout, std::move(cb));
  });
}

std::vector<std::string> ShardKvDriver::PreviousOwnerServers(const ShardKvStateMachine::View& v,
                                                             uint32_t shard) {
  if (static_cast<int>(shard) >= v.previous.shards_size()) return {};
  const uint64_t gid = v.previous.shards(shard);
  for (const ctrl::pb::Group& g : v.previous.groups()) {
    if (g.gid() == gid) return {g.servers().begin(), g.servers().end()};
  }
  return {};
}

bool ShardKvDriver::Step() {
  if (!IsLeader()) return false;
  const ShardKvStateMachine::View v = sm_->view();
  bool proposed = false;
  for (uint32_t s = 0; s < v.states.size() && !stop_.HasBeenNotified(); ++s) {
    if (v.states[s] == pb::SHARD_GC_PENDING) proposed |= Release(v, s);
  }
  for (uint32_t s = 0; s < v.states.size() && !stop_.HasBeenNotified(); ++s) {
    if (v.states[s] == pb::SHARD_PULLING) proposed |= PullShard(v, s);
  }
  if (v.settled() && !stop_.HasBeenNotified()) proposed |= Reconfigure(v);
  // Independent of the shards' progress (it moves no shard): a group in the
  // middle of a long migration still gets its new members listed.
  if (!stop_.HasBeenNotified()) UpdateServers(v);
  return proposed;
}

bool ShardKvDriver::Release(const ShardKvStateMachine::View& v, uint32_t shard) {
  const std::vector<std::string> servers = PreviousOwnerServers(v, shard);
  if (servers.empty()) return false;
  pb::DeleteShardRequest req;
  req.set_config_num(v.current.num());
  req.set_shard(shard);
  if (absl::Status st = groups_->Delete(servers, req); !st.ok()) {
    log_->debug("shard {}: previous owner has not deleted it yet: {}", shard, st.ToString());
    return false;
  }
  pb::ShardKvCommand cmd;
  cmd.mutable_handoff_done()->set_config_num(v.current.num());
  cmd.mutable_handoff_done()->set_shard(shard);
  return Propose(cmd).ok();
}

bool ShardKvDriver::PullShard(const ShardKvStateMachine::View& v, uint32_t shard) {
  const std::vector<std::string> servers = PreviousOwnerServers(v, shard);
  if (servers.empty()) return false;
  uint64_t chunk = v.staged_chunks[shard];
  std::string after = v.last_staged_key[shard];
  const absl::Time start = absl::Now();
  for (;;) {
    pb::PullShardRequest req;
    req.set_config_num(v.current.num());
    req.set_shard(shard);
    req.set_from_start(chunk == 0);
    req.set_after_key(after);
    req.set_max_bytes(options_.chunk_bytes);
    absl::StatusOr<pb::PullShardResponse> resp = groups_->Pull(servers, req);
    if (!resp.ok()) {
      log_->debug("shard {}: pull from the previous owner failed: {}", shard,
                  resp.status().ToString());
      return chunk > v.staged_chunks[shard];
    }
    if (resp->data_size() > 0) {
      after = resp->data(resp->data_size() - 1).key();
      pb::ShardKvCommand cmd;
      pb::InstallChunk* c = cmd.mutable_install_chunk();
      c->set_config_num(v.current.num());
      c->set_shard(shard);
      c->set_chunk(chunk);
      *c->mutable_data() = std::move(*resp->mutable_data());
      if (!Propose(cmd).ok()) return chunk > v.staged_chunks[shard];
      ++chunk;
    }
    if (resp->done()) {
      pb::ShardKvCommand cmd;
      pb::InstallDone* d = cmd.mutable_install_done();
      d->set_config_num(v.current.num());
      d->set_shard(shard);
      d->set_chunks(chunk);
      *d->mutable_sessions() = std::move(*resp->mutable_sessions());
      const bool ok = Propose(cmd).ok();
      if (ok) {
        log_->info("shard {}: installed at configuration {} ({} chunks, {})", shard,
                   v.current.num(), chunk, absl::FormatDuration(absl::Now() - start));
      }
      return ok;
    }
    if (stop_.HasBeenNotified() || !IsLeader()) return true;
  }
}

bool ShardKvDriver::Reconfigure(const ShardKvStateMachine::View& v) {
  absl::StatusOr<uint64_t> latest = controller_->Latest();
  if (!latest.ok()) {
    log_->debug("controller: {}", latest.status().ToString());
    return false;
  }
  if (*latest <= v.current.num()) return false;
  absl::StatusOr<ctrl::pb::Config> next = controller_->Query(v.current.num() + 1);
  if (!next.ok() || next->num() != v.current.num() + 1) return false;
  pb::ShardKvCommand cmd;
  *cmd.mutable_config()->mutable_config() = std::move(*next);
  if (!Propose(cmd).ok()) return false;
  log_->info("configuration {} applied", v.current.num() + 1);
  return true;
}

std::optional<std::vector<std::string>> ShardKvDriver::MemberServers() const {
  const raft::NodeStatus st = rsm_->status();
  // Only a committed configuration: an uncommitted change may still be
  // overwritten by another leader's log (raft/core: a replica falls back to
  // the previous configuration), and listing it could advertise a replica
  // that never becomes a member.
  if (st.conf == nullptr || !st.conf_committed || st.conf->voters().empty()) return std::nullopt;
  std::vector<std::string> servers;
  servers.reserve(st.conf->voters_size());
  // Voters only: a learner is catching up (and may not be running yet, as
  // it is added before it is started), and neither serves as leader nor is
  // needed by a client; it is listed once promoted.
  for (uint64_t id : st.conf->voters()) {  // sorted
    std::string address = options_.member_address(id);
    if (address.empty()) return std::nullopt;
    servers.push_back(std::move(address));
  }
  return servers;
}

void ShardKvDriver::UpdateServers(const ShardKvStateMachine::View& v) {
  if (!options_.member_address) return;
  // Against the configuration this group has applied: a group that has not
  // joined yet, or has left, is not in it and sends nothing.
  auto listed = std::find_if(v.current.groups().begin(), v.current.groups().end(),
                             [&](const ctrl::pb::Group& g) { return g.gid() == v.gid; });
  if (listed == v.current.groups().end()) return;
  std::optional<std::vector<std::string>> members = MemberServers();
  if (!members.has_value()) return;
  // The same addresses in another order (the order the group was joined
  // with) are left alone: only a change of members makes a configuration.
  std::vector<std::string> listed_sorted(listed->servers().begin(), listed->servers().end());
  std::vector<std::string> members_sorted = *members;
  std::sort(listed_sorted.begin(), listed_sorted.end());
  std::sort(members_sorted.begin(), members_sorted.end());
  if (listed_sorted == members_sorted) return;
  // The group lags the configuration its own call made (or, after a failure,
  // the retry interval has not passed): the controller has this list
  // already, or refused it.
  const SentServers& sent = sent_servers_;
  if (sent.servers == *members &&
      (sent.ok ? v.current.num() < sent.num : absl::Now() < sent.retry_at)) {
    return;
  }
  // Not under any lock: a blocking call to the controller.
  absl::StatusOr<uint64_t> num = controller_->Servers(v.gid, *members);
  sent_servers_.servers = *members;
  sent_servers_.ok = num.ok();
  if (num.ok()) {
    sent_servers_.num = *num;
    log_->info("group {}: the controller lists servers {} from configuration {}", v.gid,
               absl::StrJoin(*members, ","), *num);
  } else {
    sent_servers_.retry_at = absl::Now() + options_.servers_retry_interval;
    log_->warn("group {}: the controller refused servers {}: {}", v.gid,
               absl::StrJoin(*members, ","), num.status().ToString());
  }
}

}  // namespace ds::shardkv
