// 6.824 lab 3B with an unreliable network: snapshots (maxraftstate 1000
// bytes) while messages are lost and reordered, with crashes and partitions.
#include "gtest/gtest.h"
#include "tests/kvraft/lab3_harness.h"

namespace ds::kv::lab3 {
namespace {

uint64_t Seed() { return CurrentTestSeed(); }

TEST(KvRaft3B, SnapshotUnreliable) {
  GenericTest({.clients = 5, .servers = 5, .unreliable = true, .maxraftstate = 1000}, Seed());
}

TEST(KvRaft3B, SnapshotUnreliableRecover) {
  GenericTest({.clients = 5, .servers = 5, .unreliable = true, .crash = true, .maxraftstate = 1000},
              Seed());
}

TEST(KvRaft3B, SnapshotUnreliableRecoverConcurrentPartition) {
  GenericTest({.clients = 5,
               .servers = 5,
               .unreliable = true,
               .crash = true,
               .partitions = true,
               .maxraftstate = 1000},
              Seed());
}

TEST(KvRaft3B, SnapshotUnreliableRecoverConcurrentPartitionLinearizable) {
  GenericTest({.clients = 15,
               .servers = 7,
               .unreliable = true,
               .crash = true,
               .partitions = true,
               .maxraftstate = 1000,
               .randomkeys = true,
               .require_linearizability_verdict = true},
              Seed());
}

// Beyond 6.824, which only restarts every replica at once between phases:
// one replica at a time crashes and restarts (from snapshot + log) while the
// clients run, the network partitions, loses, reorders and duplicates.
TEST(KvRaftExtra, CrashOneAtATimeUnreliablePartitionSnapshotDuplicates) {
  GenericTest({.clients = 5,
               .servers = 5,
               .unreliable = true,
               .crash = true,
               .partitions = true,
               .maxraftstate = 1000,
               .crash_one_every = absl::Milliseconds(300),
               .duplicate_per_mille = 20},
              Seed());
}

}  // namespace
}  // namespace ds::kv::lab3
