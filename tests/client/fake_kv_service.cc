#include "tests/client/fake_kv_service.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ds::client::testing {

class FakeKvCluster::Replica : public kv::pb::KvService::Service {
 public:
  Replica(FakeKvCluster* cluster, int index) : cluster_(cluster), index_(index) {}

  grpc::Status Get(grpc::ServerContext* ctx, const kv::pb::GetRequest* req,
                   kv::pb::GetResponse* resp) override {
    return Handle(ctx, req->key(), [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_->mu_) {
      auto it = cluster_->data_.find(req->key());
      resp->set_found(it != cluster_->data_.end());
      if (it != cluster_->data_.end()) resp->set_value(it->second);
      return false;
    });
  }
  grpc::Status Put(grpc::ServerContext* ctx, const kv::pb::PutRequest* req,
                   kv::pb::PutResponse*) override {
    return Write(ctx, req->key(), req->client_id(), req->sequence(),
                 [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_->mu_) {
                   cluster_->data_[req->key()] = req->value();
                 });
  }
  grpc::Status Append(grpc::ServerContext* ctx, const kv::pb::AppendRequest* req,
                      kv::pb::AppendResponse*) override {
    return Write(ctx, req->key(), req->client_id(), req->sequence(),
                 [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_->mu_) {
                   cluster_->data_[req->key()] += req->value();
                 });
  }
  grpc::Status Delete(grpc::ServerContext* ctx, const kv::pb::DeleteRequest* req,
                      kv::pb::DeleteResponse* resp) override {
    return Write(ctx, req->key(), req->client_id(), req->sequence(),
                 [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_->mu_) {
                   resp->set_found(cluster_->data_.erase(req->key()) > 0);
                 });
  }
  grpc::Status Status(grpc::ServerContext*, const kv::pb::StatusRequest*,
                      kv::pb::StatusResponse* resp) override {
    absl::MutexLock lock(&cluster_->mu_);
    resp->set_id(index_ + 1);
    resp->set_role(cluster_->leader_ == index_ ? kv::pb::ROLE_LEADER : kv::pb::ROLE_FOLLOWER);
    resp->set_term(7);
    resp->set_leader_id(cluster_->leader_ + 1);
    resp->set_commit_index(cluster_->applied_writes_);
    resp->set_applied_index(cluster_->applied_writes_);
    return grpc::Status::OK;
  }

  int calls = 0;  // guarded by cluster_->mu_
  int slow_calls = 0;
  absl::Duration slow_delay;

 private:
  template <typename Fn>
  grpc::Status Write(grpc::ServerContext* ctx, const std::string& key, uint64_t client,
                     uint64_t seq, Fn apply) {
    if (client == 0 || seq == 0) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "missing client_id or sequence");
    }
    return Handle(ctx, key, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_->mu_) {
      uint64_t& last = cluster_->last_seq_[client];
      if (seq > last) {  // exactly-once, as the real state machine does
        apply();
        last = seq;
        ++cluster_->applied_writes_;
      }
      if (cluster_->lose_replies_ > 0) {
        --cluster_->lose_replies_;
        return true;
      }
      return false;
    });
  }

  // Runs `op` under the cluster lock if this replica is the leader; `op`
  // returns true to pretend the reply was lost.
  template <typename Fn>
  grpc::Status Handle(grpc::ServerContext* ctx, const std::string& key, Fn op) {
    absl::Duration delay;
    {
      absl::MutexLock lock(&cluster_->mu_);
      ++calls;
      if (slow_calls > 0) {
        --slow_calls;
        delay = slow_delay;
      }
    }
    absl::SleepFor(delay);
    if (key.empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty key");
    absl::MutexLock lock(&cluster_->mu_);
    if (cluster_->leader_ != index_) {
      if (cluster_->send_hints_ && cluster_->leader_ >= 0) {
        ctx->AddTrailingMetadata("ds-leader-address",
                                 cluster_->servers_[cluster_->leader_]->address());
      }
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "not the leader");
    }
    if (op()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "leadership lost (reply lost)");
    return grpc::Status::OK;
  }

  FakeKvCluster* cluster_;
  int index_;
};

FakeKvCluster::FakeKvCluster(int replicas) {
  for (int i = 0; i < replicas; ++i) {
    replicas_.push_back(std::make_unique<Replica>(this, i));
    auto server = std::make_unique<common::GrpcServer>(
        common::GrpcServerOptions{.listen_address = "127.0.0.1:0"});
    server->AddService(replicas_.back().get());
    absl::Status st = server->Start();
    if (!st.ok()) std::abort();  // test set-up failure
    servers_.push_back(std::move(server));
  }
}

FakeKvCluster::~FakeKvCluster() {
  for (auto& s : servers_) s->Shutdown(absl::ZeroDuration());
}

std::vector<std::string> FakeKvCluster::endpoints() const {
  std::vector<std::string> out;
  for (const auto& s : servers_) out.push_back(s->address());
  return out;
}

std::string FakeKvCluster::endpoints_flag() const { return absl::StrJoin(endpoints(), ","); }

void FakeKvCluster::set_leader(int replica) {
  absl::MutexLock lock(&mu_);
  leader_ = replica;
}
void FakeKvCluster::set_send_hints(bool on) {
  absl::MutexLock lock(&mu_);
  send_hints_ = on;
}
void FakeKvCluster::set_slow(int replica, int n, absl::Duration delay) {
  absl::MutexLock lock(&mu_);
  replicas_[replica]->slow_calls = n;
  replicas_[replica]->slow_delay = delay;
}
void FakeKvCluster::set_lose_replies(int n) {
  absl::MutexLock lock(&mu_);
  lose_replies_ = n;
}
int FakeKvCluster::calls(int replica) const {
  absl::MutexLock lock(&mu_);
  return replicas_[replica]->calls;
}
int FakeKvCluster::applied_writes() const {
  absl::MutexLock lock(&mu_);
  return applied_writes_;
}
std::string FakeKvCluster::value(const std::string& key) const {
  absl::MutexLock lock(&mu_);
  auto it = data_.find(key);
  return it == data_.end() ? "" : it->second;
}

}  // namespace ds::client::testing
