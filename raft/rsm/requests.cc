#include "raft/rsm/requests.h"

#include <memory>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/time/clock.h"
#include "raft/node/node.h"

namespace ds::rsm {
namespace {

constexpr char kNotAppliedPayload[] = "type.googleapis.com/ds.rsm.NotApplied";

// A replica that is not the leader answers at once instead of letting the
// request wait for its deadline.
bool NotLeaderHere(raft::Rsm& rsm, absl::Status* error) {
  raft::NodeStatus st = rsm.status();
  if (st.role == raft::Role::kLeader) return false;
  *error = raft::NotLeaderError(st.leader);
  error->SetPayload(kNotAppliedPayload, absl::Cord("1"));
  return true;
}

}  // namespace

bool NotApplied(const absl::Status& status) {
  return status.GetPayload(kNotAppliedPayload).has_value();
}

void SubmitAsync(raft::Rsm& rsm, const pb::SessionRef* session, std::string command,
                 absl::Time deadline, ResultCallback done) {
  if (absl::Status e; NotLeaderHere(rsm, &e)) return done(std::move(e));
  rsm.SubmitAsync(EncodeCommand(session, command, absl::ToUnixMicros(absl::Now())), deadline,
                  std::move(done));
}

void SubmitAsync(raft::Rsm& rsm, const pb::SessionRef* session,
                 const google::protobuf::MessageLite& command, absl::Time deadline,
                 ResultCallback done) {
  if (absl::Status e; NotLeaderHere(rsm, &e)) return done(std::move(e));
  rsm.SubmitAsync(EncodeCommand(session, command, absl::ToUnixMicros(absl::Now())), deadline,
                  std::move(done));
}

void OpenSessionAsync(raft::Rsm& rsm, const pb::SessionRef& session, absl::Time deadline,
                      std::function<void(absl::Status)> done) {
  if (absl::Status e; NotLeaderHere(rsm, &e)) return done(std::move(e));
  rsm.SubmitAsync(EncodeOpen(session, absl::ToUnixMicros(absl::Now())), deadline,
                  [done = std::move(done)](absl::StatusOr<std::string> r) { done(r.status()); });
}

void ReadAsync(raft::Rsm& rsm, absl::Time deadline, std::function<void(const Application&)> query,
               std::function<void(absl::Status)> done) {
  ReadStateAsync(
      rsm, deadline, [query = std::move(query)](const SessionStateMachine& sm) { query(sm.app()); },
      std::move(done));
}

void ReadStateAsync(raft::Rsm& rsm, absl::Time deadline,
                    std::function<void(const SessionStateMachine&)> query,
                    std::function<void(absl::Status)> done) {
  if (absl::Status e; NotLeaderHere(rsm, &e)) return done(std::move(e));
  rsm.ReadAsync(
      deadline,
      [query = std::move(query)](const raft::StateMachine& sm) {
        query(static_cast<const SessionStateMachine&>(sm));
      },
      std::move(done));
}

}  // namespace ds::rsm
