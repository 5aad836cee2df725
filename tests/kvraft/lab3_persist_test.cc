// 6.824 lab 3A with crashes: every replica is restarted from its own storage
// at the end of each iteration (unsynced writes lost), alone or with an
// unreliable network and partitions.
#include "gtest/gtest.h"
#include "tests/kvraft/lab3_harness.h"

namespace ds::kv::lab3 {
namespace {

uint64_t Seed() { return CurrentTestSeed(); }

TEST(KvRaft3A, PersistOneClient) {
  GenericTest({.clients = 1, .servers = 5, .crash = true}, Seed());
}

TEST(KvRaft3A, PersistConcurrent) {
  GenericTest({.clients = 5, .servers = 5, .crash = true}, Seed());
}

TEST(KvRaft3A, PersistConcurrentUnreliable) {
  GenericTest({.clients = 5, .servers = 5, .unreliable = true, .crash = true}, Seed());
}

TEST(KvRaft3A, PersistPartition) {
  GenericTest({.clients = 5, .servers = 5, .crash = true, .partitions = true}, Seed());
}

TEST(KvRaft3A, PersistPartitionUnreliable) {
  GenericTest({.clients = 5, .servers = 5, .unreliable = true, .crash = true, .partitions = true},
              Seed());
}

// 15 clients on shared keys, Puts included: no per-client prediction, the
// linearizability checker is the oracle.
TEST(KvRaft3A, PersistPartitionUnreliableLinearizable) {
  GenericTest({.clients = 15,
               .servers = 7,
               .unreliable = true,
               .crash = true,
               .partitions = true,
               .randomkeys = true,
               .require_linearizability_verdict = true},
              Seed());
}

}  // namespace
}  // namespace ds::kv::lab3
