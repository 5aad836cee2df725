#include "kvraft/kv_service.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "raft/rsm/requests.h"

namespace ds::kv {
namespace {

// The response header and the write's outcome, once it is known.
void FinishWrite(const rsm::ReplicaContext& replica, pb::KvResponse& resp,
                 const absl::StatusOr<std::string>& r) {
  if (r.ok()) {
    pb::KvResult result;
    // The bytes come from KvStateMachine::Apply (or its session's cache).
    result.ParseFromString(*r);
    switch (resp.result_case()) {
      case pb::KvResponse::kPut:
        replica.FillHeader(resp.mutable_put()->mutable_header());
        break;
      case pb::KvResponse::kAppend:
        replica.FillHeader(resp.mutable_append()->mutable_header());
        break;
      case pb::KvResponse::kDelete:
        resp.mutable_delete_()->set_found(result.found());
        replica.FillHeader(resp.mutable_delete_()->mutable_header());
        break;
      default:
        break;
    }
  } else {
    resp.clear_result();
  }
  replica.FillReply(r.status(), resp.mutable_status());
}

const KvBackend kDefaultBackend;

// The label of dstack_request_duration_seconds.
std::string_view OpName(const pb::KvRequest& req) {
  switch (req.op_case()) {
    case pb::KvRequest::kGet:
      return "get";
    case pb::KvRequest::kPut:
      return "put";
    case pb::KvRequest::kAppend:
      return "append";
    case pb::KvRequest::kDelete:
      return "delete";
    default:
      return "invalid";
  }
}

}  // namespace

void KvBackend::Submit(raft::Rsm& rsm, const rsm::pb::SessionRef& session, const pb::KvCommand& cmd,
                       absl::Time deadline, rsm::ResultCallback done) const {
  rsm::SubmitAsync(rsm, &session, cmd, deadline, std::move(done));
}

absl::StatusOr<pb::KvResult> KvBackend::Read(const rsm::Application& app,
                                             std::string_view key) const {
  return static_cast<const KvStateMachine&>(app).Get(key);
}

void HandleKvRequest(const rsm::ReplicaContext& replica, const KvServiceOptions& options,
                     pb::KvRequest req, absl::Time deadline,
                     std::function<void(pb::KvResponse)> done) {
  done = common::TimedReply(replica.request_metrics(), OpName(req), std::move(done));
  if (req.timeout_ms() > 0) {
    deadline = std::min(deadline, absl::Now() + absl::Milliseconds(req.timeout_ms()));
  }
  pb::KvResponse resp;
  resp.set_id(req.id());
  auto reject = [&](std::string message) {
    resp.clear_result();
    replica.FillReply(absl::InvalidArgumentError(std::move(message)), resp.mutable_status());
    done(std::move(resp));
  };

  const KvBackend* backend = options.backend != nullptr ? options.backend : &kDefaultBackend;
  if (req.op_case() == pb::KvRequest::kGet) {
    if (req.get().key().empty()) return reject("empty key");
    auto result = std::make_shared<absl::StatusOr<pb::KvResult>>();
    rsm::ReadAsync(
        replica.rsm(), deadline,
        [backend, result, key = std::move(*req.mutable_get()->mutable_key())](
            const rsm::Application& app) { *result = backend->Read(app, key); },
        [&replica, result, resp = std::move(resp), done = std::move(done)](absl::Status s) mutable {
          if (s.ok() && !result->ok()) s = result->status();
          if (s.ok()) {
            pb::GetResponse* g = resp.mutable_get();
            g->set_found((*result)->found());
            *g->mutable_value() = std::move(*(*result)->mutable_value());
            replica.FillHeader(g->mutable_header());
          }
          replica.FillReply(s, resp.mutable_status());
          done(std::move(resp));
        });
    return;
  }

  pb::KvCommand cmd;
  rsm::pb::SessionRef session;
  switch (req.op_case()) {
    case pb::KvRequest::kPut: {
      pb::PutRequest& r = *req.mutable_put();
      cmd.set_op(pb::OP_PUT);
      cmd.set_key(std::move(*r.mutable_key()));
      cmd.set_value(std::move(*r.mutable_value()));
      session = r.session();
      resp.mutable_put();
      break;
    }
    case pb::KvRequest::kAppend: {
      pb::AppendRequest& r = *req.mutable_append();
      cmd.set_op(pb::OP_APPEND);
      cmd.set_key(std::move(*r.mutable_key()));
      cmd.set_value(std::move(*r.mutable_value()));
      session = r.session();
      resp.mutable_append();
      break;
    }
    case pb::KvRequest::kDelete: {
      pb::DeleteRequest& r = *req.mutable_delete_();
      cmd.set_op(pb::OP_DELETE);
      cmd.set_key(std::move(*r.mutable_key()));
      session = r.session();
      resp.mutable_delete_();
      break;
    }
    default:
      return reject("request without an operation");
  }
  if (cmd.key().empty()) return reject("empty key");
  const uint64_t size = cmd.key().size() + cmd.value().size();
  if (size > options.max_request_bytes) {
    return reject(absl::StrCat("request of ", size, " bytes exceeds the limit of ",
                               options.max_request_bytes, " bytes (--max-request-bytes)"));
  }
  if (session.client_id() == 0 || session.sequence() == 0 || session.created_unix_micros() <= 0) {
    return reject("writes need a session: nonzero client_id, created_unix_micros and sequence");
  }
  backend->Submit(replica.rsm(), session, cmd, deadline,
                  [&replica, resp = std::move(resp),
                   done = std::move(done)](absl::StatusOr<std::string> r) mutable {
                    FinishWrite(replica, resp, r);
                    done(std::move(resp));
                  });
}

KvServiceImpl::KvServiceImpl(KvServiceOptions options, const rsm::ReplicaContext* replica)
    : options_(options),
      replica_(replica),
      handler_(
          [this](pb::KvRequest req, absl::Time deadline, std::function<void(pb::KvResponse)> done) {
            HandleKvRequest(*replica_, options_, std::move(req), deadline, std::move(done));
          }) {}

grpc::ServerUnaryReactor* KvServiceImpl::Get(grpc::CallbackServerContext* ctx,
                                             const pb::GetRequest* req, pb::GetResponse* resp) {
  return rsm::ServeUnary(*replica_, ctx, req, resp, &pb::KvRequest::mutable_get,
                         &pb::KvResponse::mutable_get, handler_);
}

grpc::ServerUnaryReactor* KvServiceImpl::Put(grpc::CallbackServerContext* ctx,
                                             const pb::PutRequest* req, pb::PutResponse* resp) {
  return rsm::ServeUnary(*replica_, ctx, req, resp, &pb::KvRequest::mutable_put,
                         &pb::KvResponse::mutable_put, handler_);
}

grpc::ServerUnaryReactor* KvServiceImpl::Append(grpc::CallbackServerContext* ctx,
                                                const pb::AppendRequest* req,
                                                pb::AppendResponse* resp) {
  return rsm::ServeUnary(*replica_, ctx, req, resp, &pb::KvRequest::mutable_append,
                         &pb::KvResponse::mutable_append, handler_);
}

grpc::ServerUnaryReactor* KvServiceImpl::Delete(grpc::CallbackServerContext* ctx,
                                                const pb::DeleteRequest* req,
                                                pb::DeleteResponse* resp) {
  return rsm::ServeUnary(*replica_, ctx, req, resp, &pb::KvRequest::mutable_delete_,
                         &pb::KvResponse::mutable_delete_, handler_);
}

grpc::ServerBidiReactor<pb::KvRequestBatch, pb::KvResponseBatch>* KvServiceImpl::Batch(
    grpc::CallbackServerContext*) {
  return Stream::Open(&handler_, replica_->options().request_timeout, &streams_);
}

}  // namespace ds::kv
