// Storage conformance: every Storage implementation must pass these cases, which
// spell out the contract of raft/storage.h. RocksDbStorage additionally keeps
// everything across a reopen.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "raft/storage/memory_storage.h"
#include "raft/storage/rocksdb_storage.h"
#include "raft/storage/storage.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "tests/raft/storage_test_util.h"

namespace ds::raft {
namespace {

using testing_util::Entry;
using testing_util::Indexes;
using testing_util::TempDir;

struct RocksDbFactory {
  static std::unique_ptr<Storage> Make(const std::string& dir) {
    auto s = RocksDbStorage::Open(dir);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
};

struct MemoryFactory {
  static std::unique_ptr<Storage> Make(const std::string&) {
    return std::make_unique<MemoryStorage>();
  }
};
using Implementations = ::testing::Types<RocksDbFactory, MemoryFactory>;

template <typename Factory>
class StorageConformance : public ::testing::Test {
 protected:
  void SetUp() override {
    storage_ = Factory::Make(dir_.path());
    ASSERT_NE(storage_, nullptr);
  }
  // Appends entries [lo, hi] with the given term.
  void Append(uint64_t lo, uint64_t hi, uint64_t term) {
    std::vector<pb::Entry> es;
    for (uint64_t i = lo; i <= hi; ++i) es.push_back(Entry(i, term));
    ASSERT_TRUE(storage_->Save(nullptr, es, true).ok());
  }

  TempDir dir_;
  std::unique_ptr<Storage> storage_;
};
TYPED_TEST_SUITE(StorageConformance, Implementations);

TYPED_TEST(StorageConformance, FreshStorageIsEmpty) {
  Storage& s = *this->storage_;
  EXPECT_EQ(s.FirstIndex(), 1u);
  EXPECT_EQ(s.LastIndex(), 0u);
  EXPECT_EQ(*s.Term(0), 0u);
  EXPECT_EQ(s.Term(1).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(s.Entries(1, 1, 1000)->empty());
  EXPECT_EQ(s.GetSnapshot()->metadata().index(), 0u);
  auto init = s.GetInitialState();
  ASSERT_TRUE(init.ok());
  EXPECT_EQ(init->hard_state.term(), 0u);
  EXPECT_EQ(init->conf_state.voters_size(), 0);
}

TYPED_TEST(StorageConformance, SavePersistsHardStateAndEntries) {
  Storage& s = *this->storage_;
  pb::HardState hs;
  hs.set_term(3);
  hs.set_vote(2);
  hs.set_commit(1);
  ASSERT_TRUE(s.Save(&hs, {Entry(1, 1), Entry(2, 3)}, true).ok());
  EXPECT_EQ(s.LastIndex(), 2u);
  EXPECT_EQ(*s.Term(1), 1u);
  EXPECT_EQ(*s.Term(2), 3u);
  EXPECT_EQ(Indexes(*s.Entries(1, 3, 1 << 20)), (std::vector<uint64_t>{1, 2}));
  auto init = s.GetInitialState();
  EXPECT_EQ(init->hard_state.term(), 3u);
  EXPECT_EQ(init->hard_state.vote(), 2u);
  EXPECT_EQ(init->hard_state.commit(), 1u);
  EXPECT_GT(s.RaftStateBytes(), 0u);
}

TYPED_TEST(StorageConformance, SaveTruncatesConflictingSuffix) {
  this->Append(1, 5, 1);
  Storage& s = *this->storage_;
  // §5.3: a new leader's entry at index 3 replaces 3..5.
  ASSERT_TRUE(s.Save(nullptr, {Entry(3, 2)}, true).ok());
  EXPECT_EQ(s.LastIndex(), 3u);
  EXPECT_EQ(*s.Term(3), 2u);
  EXPECT_EQ(s.Term(4).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(s.Entries(1, 5, 1 << 20).status().code(), absl::StatusCode::kOutOfRange);
}

TYPED_TEST(StorageConformance, SaveRejectsAGapAfterTheLastEntry) {
  this->Append(1, 2, 1);
  EXPECT_FALSE(this->storage_->Save(nullptr, {Entry(4, 1)}, true).ok());
  EXPECT_EQ(this->storage_->LastIndex(), 2u);
}

TYPED_TEST(StorageConformance, SaveRejectsNonContiguousEntries) {
  this->Append(1, 2, 1);
  Storage& s = *this->storage_;
  EXPECT_EQ(s.Save(nullptr, {Entry(3, 1), Entry(5, 1)}, true).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.LastIndex(), 2u);
}

TYPED_TEST(StorageConformance, SaveRejectsATermLowerThanTheEntryBefore) {
  this->Append(1, 2, 3);
  Storage& s = *this->storage_;
  EXPECT_EQ(s.Save(nullptr, {Entry(3, 2)}, true).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.Save(nullptr, {Entry(3, 3), Entry(4, 1)}, true).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.LastIndex(), 2u);
}

// A committed entry is never truncated or overwritten (§5.4: Leader
// Completeness); a driver that tries has a bug, and nothing is written.
TYPED_TEST(StorageConformance, SaveRefusesToOverwriteCommittedEntries) {
  Storage& s = *this->storage_;
  pb::HardState hs;
  hs.set_term(1);
  hs.set_commit(3);
  ASSERT_TRUE(s.Save(&hs, {Entry(1, 1), Entry(2, 1), Entry(3, 1), Entry(4, 1)}, true).ok());
  pb::HardState newer = hs;
  newer.set_term(2);
  EXPECT_EQ(s.Save(&newer, {Entry(3, 2)}, true).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.LastIndex(), 4u);
  EXPECT_EQ(*s.Term(3), 1u);
  EXPECT_EQ(s.GetInitialState()->hard_state.term(), 1u) << "a rejected Save writes nothing";
  // The uncommitted suffix may still be replaced.
  EXPECT_TRUE(s.Save(&newer, {Entry(4, 2)}, true).ok());
}

TYPED_TEST(StorageConformance, ApplySnapshotRefusesToDiscardCommittedEntries) {
  Storage& s = *this->storage_;
  pb::HardState hs;
  hs.set_term(1);
  hs.set_commit(5);
  ASSERT_TRUE(
      s.Save(&hs, {Entry(1, 1), Entry(2, 1), Entry(3, 1), Entry(4, 1), Entry(5, 1)}, true).ok());
  pb::Snapshot snap;
  snap.mutable_metadata()->set_index(4);
  snap.mutable_metadata()->set_term(1);
  EXPECT_EQ(s.ApplySnapshot(snap).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.LastIndex(), 5u);
  EXPECT_EQ(s.FirstIndex(), 1u);
}

TYPED_TEST(StorageConformance, EntriesHonorsMaxBytesButReturnsAtLeastOne) {
  this->Append(1, 10, 1);
  Storage& s = *this->storage_;
  const uint64_t one = Entry(1, 1).ByteSizeLong();
  EXPECT_EQ(s.Entries(1, 11, 0)->size(), 1u);
  EXPECT_EQ(s.Entries(1, 11, one)->size(), 1u);
  EXPECT_EQ(s.Entries(1, 11, 3 * one)->size(), 3u);
  EXPECT_EQ(s.Entries(4, 11, 1 << 20)->size(), 7u);
  EXPECT_EQ(s.Entries(1, 12, 1 << 20).status().code(), absl::StatusCode::kOutOfRange);
}

TYPED_TEST(StorageConformance, CreateSnapshotDiscardsThePrefix) {
  this->Append(1, 10, 2);
  Storage& s = *this->storage_;
  const uint64_t before = s.RaftStateBytes();
  pb::ConfState cs;
  cs.add_voters(1);
  ASSERT_TRUE(s.CreateSnapshot(6, cs, "state@6").ok());
  EXPECT_EQ(s.FirstIndex(), 7u);
  EXPECT_EQ(s.LastIndex(), 10u);
  EXPECT_EQ(*s.Term(6), 2u);  // the snapshot index still answers its term
  EXPECT_EQ(s.Term(5).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(s.Entries(6, 8, 1 << 20).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Indexes(*s.Entries(7, 11, 1 << 20)), (std::vector<uint64_t>{7, 8, 9, 10}));
  auto snap = s.GetSnapshot();
  EXPECT_EQ(snap->metadata().index(), 6u);
  EXPECT_EQ(snap->metadata().term(), 2u);
  EXPECT_EQ(snap->metadata().conf_state().voters_size(), 1);
  EXPECT_EQ(snap->data(), "state@6");
  EXPECT_LT(s.RaftStateBytes(), before);
  EXPECT_EQ(s.SnapshotBytes(), 7u);
  EXPECT_EQ(s.CreateSnapshot(4, cs, "old").code(), absl::StatusCode::kFailedPrecondition);
}

TYPED_TEST(StorageConformance, CreateSnapshotOfTheWholeLogLeavesItEmpty) {
  this->Append(1, 4, 1);
  Storage& s = *this->storage_;
  ASSERT_TRUE(s.CreateSnapshot(4, {}, "x").ok());
  EXPECT_EQ(s.FirstIndex(), 5u);
  EXPECT_EQ(s.LastIndex(), 4u);
  this->Append(5, 6, 1);
  EXPECT_EQ(s.LastIndex(), 6u);
}

TYPED_TEST(StorageConformance, ApplySnapshotReplacesTheWholeLog) {
  this->Append(1, 5, 1);
  Storage& s = *this->storage_;
  pb::Snapshot snap;
  snap.mutable_metadata()->set_index(20);
  snap.mutable_metadata()->set_term(4);
  snap.mutable_metadata()->mutable_conf_state()->add_voters(7);
  snap.set_data(std::string(1000, 'z'));
  ASSERT_TRUE(s.ApplySnapshot(snap).ok());
  EXPECT_EQ(s.FirstIndex(), 21u);
  EXPECT_EQ(s.LastIndex(), 20u);
  EXPECT_EQ(*s.Term(20), 4u);
  EXPECT_EQ(s.SnapshotBytes(), 1000u);
  EXPECT_EQ(s.GetSnapshot()->data().size(), 1000u);
  EXPECT_EQ(s.GetInitialState()->conf_state.voters(0), 7u);
  this->Append(21, 22, 4);
  EXPECT_EQ(s.LastIndex(), 22u);
}

TYPED_TEST(StorageConformance, InitialConfStateComesFromTheLatestConfChangeEntry) {
  Storage& s = *this->storage_;
  pb::ConfState cs;
  cs.add_voters(1);
  cs.add_voters(2);
  pb::Entry cc = Entry(2, 1);
  cc.set_type(pb::ENTRY_CONF_CHANGE);
  cc.set_data(cs.SerializeAsString());
  ASSERT_TRUE(s.Save(nullptr, {Entry(1, 1), cc, Entry(3, 1)}, true).ok());
  auto init = s.GetInitialState();
  ASSERT_TRUE(init.ok());
  EXPECT_EQ(init->conf_state.voters_size(), 2);
}

TYPED_TEST(StorageConformance, CreateSnapshotKeepsTheEntriesRetentionAllows) {
  Storage& s = *this->storage_;
  this->Append(1, 4, 1);
  this->Append(5, 20, 2);
  const uint64_t one = Entry(10, 2).ByteSizeLong();
  const uint64_t unsnapshotted = s.RaftStateBytes() - 16 * one;  // hard state + entries 17..20
  ASSERT_TRUE(s.CreateSnapshot(16, {}, "state@16", LogRetention{5, 1 << 20}).ok());
  EXPECT_EQ(s.SnapshotIndex(), 16u);
  EXPECT_EQ(s.FirstIndex(), 12u);  // 12..16 kept below the snapshot
  EXPECT_EQ(s.LastIndex(), 20u);
  EXPECT_EQ(*s.Term(11), 2u);  // the entry before the first still answers its term
  EXPECT_EQ(s.Term(10).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Indexes(*s.Entries(12, 21, 1 << 20)),
            (std::vector<uint64_t>{12, 13, 14, 15, 16, 17, 18, 19, 20}));
  EXPECT_EQ(s.GetSnapshot()->metadata().index(), 16u);
  EXPECT_EQ(s.GetSnapshot()->metadata().term(), 2u);
  // What the next snapshot covers: the kept entries do not count.
  EXPECT_EQ(s.RaftStateBytes(), unsnapshotted);

  // The byte bound: only 2 entries fit. Never un-compacts: 3 entries allowed
  // but the log already starts at 12.
  ASSERT_TRUE(s.CreateSnapshot(18, {}, "state@18", LogRetention{100, 2 * one}).ok());
  EXPECT_EQ(s.FirstIndex(), 17u);
  ASSERT_TRUE(s.CreateSnapshot(19, {}, "state@19", LogRetention{100, 1 << 20}).ok());
  EXPECT_EQ(s.FirstIndex(), 17u);
  EXPECT_EQ(s.SnapshotIndex(), 19u);

  // Entries at or below the snapshot index are covered by it: Save skips them
  // (they are committed) and appends what follows.
  ASSERT_TRUE(s.Save(nullptr, {Entry(19, 2), Entry(20, 2), Entry(21, 3)}, true).ok());
  EXPECT_EQ(s.LastIndex(), 21u);

  // A snapshot from the leader still replaces the whole log.
  pb::Snapshot snap;
  snap.mutable_metadata()->set_index(30);
  snap.mutable_metadata()->set_term(3);
  ASSERT_TRUE(s.ApplySnapshot(snap).ok());
  EXPECT_EQ(s.FirstIndex(), 31u);
  EXPECT_EQ(s.SnapshotIndex(), 30u);
  EXPECT_EQ(*s.Term(30), 3u);
}

TYPED_TEST(StorageConformance, ConfChangesKeptBelowTheSnapshotAreNotInTheInitialState) {
  Storage& s = *this->storage_;
  pb::ConfState two;
  two.add_voters(1);
  two.add_voters(2);
  pb::Entry cc = Entry(2, 1);
  cc.set_type(pb::ENTRY_CONF_CHANGE);
  cc.set_data(two.SerializeAsString());
  ASSERT_TRUE(s.Save(nullptr, {Entry(1, 1), cc, Entry(3, 1), Entry(4, 1)}, true).ok());
  pb::ConfState three = two;
  three.add_voters(3);
  ASSERT_TRUE(s.CreateSnapshot(3, three, "x", LogRetention{10, 1 << 20}).ok());
  EXPECT_EQ(s.FirstIndex(), 1u);
  auto init = s.GetInitialState();
  ASSERT_TRUE(init.ok());
  EXPECT_TRUE(init->conf_entries.empty());
  EXPECT_EQ(init->conf_state.voters_size(), 3);
}

// ---- RocksDB only: durability across a reopen ----

TEST(RocksDbStorage, ReopenRestoresHardStateLogAndSnapshot) {
  TempDir dir;
  {
    auto s = RocksDbStorage::Open(dir.path());
    ASSERT_TRUE(s.ok()) << s.status();
    pb::HardState hs;
    hs.set_term(5);
    hs.set_vote(1);
    hs.set_commit(7);
    std::vector<pb::Entry> es;
    for (uint64_t i = 1; i <= 12; ++i) es.push_back(Entry(i, 5));
    ASSERT_TRUE((*s)->Save(&hs, es, true).ok());
    ASSERT_TRUE((*s)->Save(nullptr, {Entry(11, 6)}, true).ok());  // truncates 12
    ASSERT_TRUE((*s)->CreateSnapshot(4, {}, "snap").ok());
  }
  auto s = RocksDbStorage::Open(dir.path());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->FirstIndex(), 5u);
  EXPECT_EQ((*s)->LastIndex(), 11u);
  EXPECT_EQ(*(*s)->Term(11), 6u);
  EXPECT_EQ(*(*s)->Term(4), 5u);
  EXPECT_EQ((*s)->GetInitialState()->hard_state.commit(), 7u);
  EXPECT_EQ((*s)->GetSnapshot()->data(), "snap");
  EXPECT_EQ((*s)->SnapshotBytes(), 4u);
}

// ---- RocksDB only: a damaged database is kDataLoss at Open ----

// Writes `entry` under its log key ("e" + big-endian index), bypassing Save.
void PutRawEntry(rocksdb::DB* db, uint64_t index, const pb::Entry& entry) {
  std::string key(9, '\0');
  key[0] = 'e';
  for (int i = 0; i < 8; ++i) key[1 + i] = static_cast<char>((index >> (56 - 8 * i)) & 0xff);
  ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), key, entry.SerializeAsString()).ok());
}

// Opens the database underneath RocksDbStorage to damage it.
std::unique_ptr<rocksdb::DB> OpenRaw(const std::string& path) {
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(rocksdb::Options(), path, &raw);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return std::unique_ptr<rocksdb::DB>(raw);
}

void ExpectDataLoss(const std::string& path, const std::string& message) {
  auto s = RocksDbStorage::Open(path);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_NE(s.status().message().find(message), std::string::npos) << s.status();
}

TEST(RocksDbStorage, ReopenKeepsTheEntriesKeptBelowTheSnapshot) {
  TempDir dir;
  {
    auto s = RocksDbStorage::Open(dir.path());
    ASSERT_TRUE(s.ok()) << s.status();
    std::vector<pb::Entry> es;
    for (uint64_t i = 1; i <= 12; ++i) es.push_back(Entry(i, i < 6 ? 1 : 2));
    ASSERT_TRUE((*s)->Save(nullptr, es, true).ok());
    ASSERT_TRUE((*s)->CreateSnapshot(8, {}, "snap", LogRetention{3, 1 << 20}).ok());
  }
  {
    auto s = RocksDbStorage::Open(dir.path());
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ((*s)->FirstIndex(), 6u);
    EXPECT_EQ((*s)->SnapshotIndex(), 8u);
    EXPECT_EQ(*(*s)->Term(5), 1u);
    EXPECT_EQ(*(*s)->Term(6), 2u);
    EXPECT_EQ((*s)->LastIndex(), 12u);
    // Snapshot at the same index without retention: the kept entries go.
    ASSERT_TRUE((*s)->CreateSnapshot(8, {}, "snap", LogRetention{}).ok());
    EXPECT_EQ((*s)->FirstIndex(), 9u);
  }
  auto s = RocksDbStorage::Open(dir.path());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->FirstIndex(), 9u);
  EXPECT_EQ(*(*s)->Term(8), 2u);
  EXPECT_EQ((*s)->LastIndex(), 12u);
}

TEST(RocksDbStorage, OpenReportsACommitIndexBeyondTheLog) {
  TempDir dir;
  {
    auto s = RocksDbStorage::Open(dir.path());
    ASSERT_TRUE(s.ok()) << s.status();
    pb::HardState hs;
    hs.set_term(1);
    hs.set_commit(9);
    ASSERT_TRUE((*s)->Save(&hs, {Entry(1, 1), Entry(2, 1)}, true).ok());
  }
  ExpectDataLoss(dir.path(), "hard state commit index 9 is beyond last index 2");
}

TEST(RocksDbStorage, OpenReportsATermGoingDown) {
  TempDir dir;
  {
    auto s = RocksDbStorage::Open(dir.path());
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE((*s)->Save(nullptr, {Entry(1, 2), Entry(2, 2)}, true).ok());
  }
  PutRawEntry(OpenRaw(dir.path()).get(), 3, Entry(3, 1));
  ExpectDataLoss(dir.path(), "entry 3 has term 1, lower than term 2 of the entry before it");
}

TEST(RocksDbStorage, OpenReportsAHoleInTheLog) {
  TempDir dir;
  {
    auto s = RocksDbStorage::Open(dir.path());
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE((*s)->Save(nullptr, {Entry(1, 1), Entry(2, 1)}, true).ok());
  }
  PutRawEntry(OpenRaw(dir.path()).get(), 4, Entry(4, 1));
  ExpectDataLoss(dir.path(), "log hole: expected 3 got 4");
}

TEST(RocksDbStorage, OpenReportsSnapshotMetadataWithoutData) {
  TempDir dir;
  {
    auto s = RocksDbStorage::Open(dir.path());
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE((*s)->Save(nullptr, {Entry(1, 1), Entry(2, 1)}, true).ok());
    ASSERT_TRUE((*s)->CreateSnapshot(2, {}, "state").ok());
  }
  ASSERT_TRUE(OpenRaw(dir.path())->Delete(rocksdb::WriteOptions(), "d").ok());
  ExpectDataLoss(dir.path(), "snapshot at index 2 has metadata but no data");
}

TEST(RocksDbStorage, OpenFailsWithoutCreateIfMissing) {
  TempDir dir;
  RocksDbStorageOptions options;
  options.create_if_missing = false;
  EXPECT_FALSE(RocksDbStorage::Open(dir.path() + "/absent", options).ok());
}

}  // namespace
}  // namespace ds::raft
