#include "tests/client/fake_kv_service.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ds::client::testing {

class FakeKvCluster::Replica : public kv::pb::KvService::Service {
 public:
  Replica(FakeKvCluster* cluster, int index) : cluster_(cluster), index_(index) {}

  grpc::Status Get(grpc::ServerContext* ctx, const kv::pb::GetRequest* req,
                   kv::pb::GetResponse* resp) override {
    return Unary(ctx, [&](std::string* hint) { return DoGet(*req, resp, hint); });
  }
  grpc::Status Put(grpc::ServerContext* ctx, const kv::pb::PutRequest* req,
                   kv::pb::PutResponse*) override {
    return Unary(ctx, [&](std::string* hint) { return DoPut(*req, hint); });
  }
  grpc::Status Append(grpc::ServerContext* ctx, const kv::pb::AppendRequest* req,
                      kv::pb::AppendResponse*) override {
    return Unary(ctx, [&](std::string* hint) { return DoAppend(*req, hint); });
  }
  grpc::Status Delete(grpc::ServerContext* ctx, const kv::pb::DeleteRequest* req,
                      kv::pb::DeleteResponse* resp) override {
    return Unary(ctx, [&](std::string* hint) { return DoDelete(*req, resp, hint); });
  }
  grpc::Status Register(grpc::ServerContext* ctx, const kv::pb::RegisterRequest*,
                        kv::pb::RegisterResponse* resp) override {
    return Unary(ctx, [&](std::string* hint) { return DoRegister(resp, hint); });
  }
  // The same requests over a Batch stream, answered in order, one message per
  // request batch (the real server answers in completion order).
  grpc::Status Batch(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<kv::pb::KvResponseBatch, kv::pb::KvRequestBatch>* stream) override {
    kv::pb::KvRequestBatch in;
    while (stream->Read(&in)) {
      kv::pb::KvResponseBatch out;
      for (const kv::pb::KvRequest& req : in.requests()) {
        kv::pb::KvResponse* r = out.add_responses();
        r->set_id(req.id());
        std::string hint;
        grpc::Status st;
        switch (req.op_case()) {
          case kv::pb::KvRequest::kGet:
            st = DoGet(req.get(), r->mutable_get(), &hint);
            break;
          case kv::pb::KvRequest::kPut:
            st = DoPut(req.put(), &hint);
            r->mutable_put();
            break;
          case kv::pb::KvRequest::kAppend:
            st = DoAppend(req.append(), &hint);
            r->mutable_append();
            break;
          case kv::pb::KvRequest::kDelete:
            st = DoDelete(req.delete_(), r->mutable_delete_(), &hint);
            break;
          case kv::pb::KvRequest::kRegister:
            st = DoRegister(r->mutable_register_(), &hint);
            break;
          default:
            st = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no operation");
        }
        if (!st.ok()) {
          r->clear_result();
          r->set_code(st.error_code());
          r->set_message(st.error_message());
          r->set_leader_address(hint);
        }
      }
      if (!stream->Write(out)) break;
    }
    return grpc::Status::OK;
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
  // A unary call: the leader hint goes into the trailing metadata.
  template <typename Fn>
  grpc::Status Unary(grpc::ServerContext* ctx, Fn fn) {
    std::string hint;
    grpc::Status st = fn(&hint);
    if (!hint.empty()) ctx->AddTrailingMetadata("ds-leader-address", hint);
    return st;
  }

  grpc::Status DoGet(const kv::pb::GetRequest& req, kv::pb::GetResponse* resp, std::string* hint) {
    return Handle(hint, &req.key(), [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_->mu_) {
      auto it = cluster_->data_.find(req.key());
      resp->set_found(it != cluster_->data_.end());
      if (it != cluster_->data_.end()) resp->set_value(it->second);
      return false;
    });
  }
  grpc::Status DoPut(const kv::pb::PutRequest& req, std::string* hint) {
    return Write(hint, req.key(), req.client_id(), req.sequence(),
                 [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_->mu_) {
                   cluster_->data_[req.key()] = req.value();
                 });
  }
  grpc::Status DoAppend(const kv::pb::AppendRequest& req, std::string* hint) {
    return Write(hint, req.key(), req.client_id(), req.sequence(),
                 [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_->mu_) {
                   cluster_->data_[req.key()] += req.value();
                 });
  }
  grpc::Status DoDelete(const kv::pb::DeleteRequest& req, kv::pb::DeleteResponse* resp,
                        std::string* hint) {
    return Write(hint, req.key(), req.client_id(), req.sequence(),
                 [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_->mu_) {
                   resp->set_found(cluster_->data_.erase(req.key()) > 0);
                 });
  }
  grpc::Status DoRegister(kv::pb::RegisterResponse* resp, std::string* hint) {
    return Handle(hint, nullptr, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_->mu_) {
      const uint64_t id = cluster_->next_client_id_++;
      cluster_->last_seq_[id] = 0;
      ++cluster_->registrations_;
      resp->set_client_id(id);
      return LoseReply();
    });
  }

  template <typename Fn>
  grpc::Status Write(std::string* hint, const std::string& key, uint64_t client, uint64_t seq,
                     Fn apply) {
    if (client == 0 || seq == 0) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "missing client_id or sequence");
    }
    bool expired = false;
    grpc::Status st = Handle(hint, &key, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_->mu_) {
      auto it = cluster_->last_seq_.find(client);
      if (it == cluster_->last_seq_.end()) {
        expired = true;  // as the real state machine: no session, no write
        return false;
      }
      if (seq > it->second) {  // exactly-once, as the real state machine does
        apply();
        it->second = seq;
        ++cluster_->applied_writes_;
      }
      return LoseReply();
    });
    if (st.ok() && expired) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "client has no session (expired, evicted or never registered)");
    }
    return st;
  }

  bool LoseReply() ABSL_EXCLUSIVE_LOCKS_REQUIRED(cluster_->mu_) {
    if (cluster_->lose_replies_ == 0) return false;
    --cluster_->lose_replies_;
    return true;
  }

  // Runs `op` under the cluster lock if this replica is the leader; `op`
  // returns true to pretend the reply was lost. `key` (null for Register) must
  // not be empty.
  template <typename Fn>
  grpc::Status Handle(std::string* hint, const std::string* key, Fn op) {
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
    if (key != nullptr && key->empty())
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty key");
    absl::MutexLock lock(&cluster_->mu_);
    if (cluster_->leader_ != index_) {
      if (cluster_->send_hints_ && cluster_->leader_ >= 0) {
        *hint = cluster_->servers_[cluster_->leader_]->address();
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
void FakeKvCluster::ExpireSessions() {
  absl::MutexLock lock(&mu_);
  last_seq_.clear();
}
int FakeKvCluster::applied_writes() const {
  absl::MutexLock lock(&mu_);
  return applied_writes_;
}
int FakeKvCluster::registrations() const {
  absl::MutexLock lock(&mu_);
  return registrations_;
}
std::string FakeKvCluster::value(const std::string& key) const {
  absl::MutexLock lock(&mu_);
  auto it = data_.find(key);
  return it == data_.end() ? "" : it->second;
}

}  // namespace ds::client::testing
