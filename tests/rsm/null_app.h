// An application that applies nothing: for tests of what a replica does
// around its state machine (start-up checks, ports, metrics).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "raft/rsm/session_state_machine.h"

namespace ds::rsm::testing {

class NullApp : public Application {
 public:
  absl::StatusOr<std::string> Apply(std::string_view, const ApplyContext&) override {
    return std::string();
  }
  void SnapshotTo(std::string*) const override {}
  absl::Status Restore(std::string_view) override { return absl::OkStatus(); }
};

}  // namespace ds::rsm::testing
