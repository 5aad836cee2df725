#include "raft/core/quorum.h"

#include <algorithm>

namespace ds::raft {

uint64_t CommittedIndex(const std::vector<uint64_t>& voters,
                        const std::function<uint64_t(uint64_t)>& acked) {
  if (voters.empty()) return 0;
  std::vector<uint64_t> match;
  match.reserve(voters.size());
  for (uint64_t id : voters) match.push_back(acked(id));
  // Sorted descending, the (n/2)-th element is acknowledged by n/2 + 1 voters.
  std::sort(match.begin(), match.end(), std::greater<uint64_t>());
  return match[voters.size() / 2];
}

VoteResult TallyVotes(const std::vector<uint64_t>& voters, const std::map<uint64_t, bool>& votes) {
  size_t granted = 0, rejected = 0;
  for (uint64_t id : voters) {
    auto it = votes.find(id);
    if (it == votes.end()) continue;
    (it->second ? granted : rejected)++;
  }
  const size_t q = voters.size() / 2 + 1;
  if (granted >= q) return VoteResult::kWon;
  if (voters.size() - rejected < q) return VoteResult::kLost;
  return VoteResult::kPending;
}

}  // namespace ds::raft
