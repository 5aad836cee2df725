#include "raft/storage/storage.h"

#include "absl/strings/str_cat.h"

namespace ds::raft {

uint64_t KeptLogStart(uint64_t index, uint64_t offset, const LogRetention& keep,
                      absl::FunctionRef<uint64_t(uint64_t i)> bytes_of, uint64_t* kept_bytes) {
  uint64_t start = index;
  *kept_bytes = 0;
  while (start > offset && index - start < keep.entries &&
         *kept_bytes + bytes_of(start) <= keep.bytes) {
    *kept_bytes += bytes_of(start);
    --start;
  }
  return start;
}

absl::Status CheckEntriesFollow(uint64_t prev_index, uint64_t prev_term,
                                std::span<const pb::Entry> entries) {
  for (const pb::Entry& e : entries) {
    if (e.index() != prev_index + 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("entries not contiguous: entry ", e.index(), " after ", prev_index));
    }
    if (e.term() < prev_term) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", e.index(), " has term ", e.term(),
                                                     ", lower than term ", prev_term,
                                                     " of the entry before it"));
    }
    prev_index = e.index();
    prev_term = e.term();
  }
  return absl::OkStatus();
}

}  // namespace ds::raft
