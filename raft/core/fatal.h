// Fatal: fail-stop on a state that only a bug or corrupt storage can produce
// (etcd's raftLog panics: "tocommit(%d) is out of range [lastIndex(%d)]").
//
// Carrying on from such a state is worse than stopping: a node whose log lost
// entries it acknowledged can vote for a leader that lacks committed entries,
// and a node that truncates or skips a committed entry applies a different
// history than its peers. So the core checks its own invariants and what
// storage hands it, and stops the process with a message naming the indexes
// and terms. Bad input from a peer is never a reason to call this (Step
// returns kInvalidArgument); corrupt storage found at restart is reported as a
// Status by CheckStorageForRestart (raft/core/core.h) before the core starts.
#pragma once

#include <string_view>

namespace ds::raft {

// Prints "raft: <message>" to stderr and calls std::abort().
[[noreturn]] void Fatal(std::string_view message);

}  // namespace ds::raft
