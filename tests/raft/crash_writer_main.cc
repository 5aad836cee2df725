// raft_crash_writer DIR ACK_FILE: appends entries to a RocksDbStorage in DIR
// forever, each batch saved with sync, and after each synced Save appends the
// new last index as a line to ACK_FILE. The crash test kill -9's it at random
// points; every index it acknowledged must survive. Every 500 entries it also
// takes a snapshot (prefix compaction) so kills land inside those too.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "raft/storage/rocksdb_storage.h"
#include "tests/raft/storage_test_util.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s DIR ACK_FILE\n", argv[0]);
    return 2;
  }
  auto storage = ds::raft::RocksDbStorage::Open(argv[1]);
  if (!storage.ok()) {
    std::fprintf(stderr, "open: %s\n", storage.status().ToString().c_str());
    return 1;
  }
  int ack = open(argv[2], O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (ack < 0) return 1;
  ds::raft::Storage& s = **storage;
  uint64_t next = s.LastIndex() + 1;
  for (uint64_t round = 0;; ++round) {
    std::vector<ds::raft::pb::Entry> batch;
    const uint64_t n = 1 + (round * 37) % 64;
    for (uint64_t k = 0; k < n; ++k, ++next) {
      batch.push_back(
          ds::raft::testing_util::Entry(next, 1, ds::raft::testing_util::CrashPayloadBytes(next)));
    }
    ds::raft::pb::HardState hs;
    hs.set_term(1);
    hs.set_commit(next - 1);
    if (absl::Status st = s.Save(&hs, batch, /*sync=*/true); !st.ok()) {
      std::fprintf(stderr, "save: %s\n", st.ToString().c_str());
      return 1;
    }
    // The index is durable now; only then is it acknowledged.
    std::string line = std::to_string(next - 1) + "\n";
    if (write(ack, line.data(), line.size()) != static_cast<ssize_t>(line.size())) return 1;
    if ((next - 1) / 500 != (next - 1 - n) / 500 && next > 200) {
      const uint64_t at = next - 101;
      if (at >= s.FirstIndex()) {
        absl::Status st = s.CreateSnapshot(at, {}, "snapshot@" + std::to_string(at));
        if (!st.ok()) {
          std::fprintf(stderr, "snapshot: %s\n", st.ToString().c_str());
          return 1;
        }
      }
    }
  }
}
