// The request path of every replicated service, without gRPC: what the
// services' handlers (raft/service/) and the in-process test harnesses call.
// All of these answer at once with kUnavailable on a replica that is not the
// leader (with raft::LeaderHint and NotApplied() set: nothing was proposed),
// instead of letting the request wait for its deadline.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/rsm.pb.h"
#include "raft/rsm/rsm.h"
#include "raft/rsm/session_state_machine.h"

namespace ds::rsm {

using ResultCallback = std::function<void(absl::StatusOr<std::string>)>;

// Proposes the application command `command` under `session` (nullptr:
// sessionless), stamped with this leader's clock, and reports what
// Application::Apply (or the session layer) returned once it is applied here.
// Errors as raft::Rsm::SubmitAsync, plus the session layer's (kAborted with
// SessionWatermark, kAlreadyExists) and the application's.
void SubmitAsync(raft::Rsm& rsm, const pb::SessionRef* session, std::string command,
                 absl::Time deadline, ResultCallback done);
// The same with the command as a message (serialized once, into the entry).
void SubmitAsync(raft::Rsm& rsm, const pb::SessionRef* session,
                 const google::protobuf::MessageLite& command, absl::Time deadline,
                 ResultCallback done);

// Opens `session` through the log (the Register RPC).
void OpenSessionAsync(raft::Rsm& rsm, const pb::SessionRef& session, absl::Time deadline,
                      std::function<void(absl::Status)> done);

// Runs `query` on the application at a linearizable point (ReadIndex: nothing
// is written to the log), then `done` with OK; otherwise `done` gets the error
// and `query` does not run. The Rsm must apply to a SessionStateMachine.
void ReadAsync(raft::Rsm& rsm, absl::Time deadline, std::function<void(const Application&)> query,
               std::function<void(absl::Status)> done);

// ReadAsync with the whole session state machine (the application and the
// client sessions), for reads that need the sessions too (shardkv's pulls).
void ReadStateAsync(raft::Rsm& rsm, absl::Time deadline,
                    std::function<void(const SessionStateMachine&)> query,
                    std::function<void(absl::Status)> done);

// True if `status` says the replica refused before proposing anything.
bool NotApplied(const absl::Status& status);

}  // namespace ds::rsm
