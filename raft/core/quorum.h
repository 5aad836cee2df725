// Majority quorum math (no joint consensus yet: membership changes are not
// implemented, but the configuration already lives in the log and snapshots).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

namespace ds::raft {

enum class VoteResult { kPending, kWon, kLost };

// The largest index that a majority of `voters` has acknowledged, where
// acked(id) returns the match index of voter id. 0 for an empty config.
uint64_t CommittedIndex(const std::vector<uint64_t>& voters,
                        const std::function<uint64_t(uint64_t)>& acked);

// Outcome of an election among `voters` given the votes received so far
// (voter id -> granted). Votes from non-voters are ignored.
VoteResult TallyVotes(const std::vector<uint64_t>& voters, const std::map<uint64_t, bool>& votes);

}  // namespace ds::raft
