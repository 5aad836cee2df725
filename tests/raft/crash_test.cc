// Crash recovery of RocksDbStorage: a child process appends synced entries and
// acknowledges each synced index; we kill -9 it at random moments, reopen the
// database and check that no acknowledged entry is lost and that the log has no
// torn or garbled tail.
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "raft/storage/rocksdb_storage.h"
#include "tests/raft/storage_test_util.h"

namespace ds::raft {
namespace {

using testing_util::CrashPayloadBytes;
using testing_util::EntryIntact;
using testing_util::TempDir;

// The last complete line of the ack file (a line cut by the kill is ignored).
uint64_t LastAcked(const std::string& path) {
  std::ifstream in(path);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t end = content.rfind('\n');
  if (end == std::string::npos) return 0;
  const size_t begin = content.rfind('\n', end - 1);
  return std::stoull(content.substr(begin == std::string::npos ? 0 : begin + 1, end));
}

// Reopens the database and checks the whole persisted state.
void CheckRecovered(const std::string& db, uint64_t acked) {
  auto opened = RocksDbStorage::Open(db);
  ASSERT_TRUE(opened.ok()) << opened.status();
  Storage& s = **opened;
  ASSERT_GE(s.LastIndex(), acked) << "an acknowledged entry was lost";
  const uint64_t first = s.FirstIndex();
  if (first > 1) {
    auto snap = s.GetSnapshot();
    ASSERT_TRUE(snap.ok());
    EXPECT_EQ(snap->metadata().index(), first - 1);
    EXPECT_EQ(snap->data(), "snapshot@" + std::to_string(first - 1));
  }
  for (uint64_t lo = first; lo <= s.LastIndex();) {
    auto es = s.Entries(lo, s.LastIndex() + 1, 1 << 20);
    ASSERT_TRUE(es.ok()) << es.status();
    for (const pb::Entry& e : *es) {
      ASSERT_EQ(e.index(), lo) << "hole in the log";
      ASSERT_EQ(e.term(), 1u);
      ASSERT_TRUE(EntryIntact(e, CrashPayloadBytes(e.index()))) << "garbled entry " << lo;
      ++lo;
    }
  }
  EXPECT_EQ(s.GetInitialState()->hard_state.term(), 1u);
}

TEST(RocksDbStorageCrash, KillNineNeverLosesAnAcknowledgedEntry) {
  TempDir dir;
  const std::string db = dir.path() + "/db";
  const std::string ack = dir.path() + "/acks";
  std::mt19937 rng(std::random_device{}());
  uint64_t acked = 0;
  for (int round = 0; round < 6; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    common::SubprocessOptions options;
    options.argv = {common::BinaryPath("raft_crash_writer"), db, ack};
    options.log_path = dir.path() + "/writer.log";
    auto child = common::Subprocess::Start(std::move(options));
    ASSERT_TRUE(child.ok()) << child.status();
    // Wait until the writer has acknowledged new entries (it is then in its
    // write loop), then let it run a random extra moment and kill it.
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (LastAcked(ack) < acked + 300 && absl::Now() < deadline && (*child)->running()) {
      absl::SleepFor(absl::Milliseconds(2));
    }
    ASSERT_TRUE((*child)->running()) << "writer exited; see writer.log";
    absl::SleepFor(absl::Microseconds(std::uniform_int_distribution<int>(0, 30000)(rng)));
    (*child)->Kill();
    acked = LastAcked(ack);
    ASSERT_GT(acked, 0u);
    CheckRecovered(db, acked);
    if (HasFatalFailure()) return;
  }
  // The run crossed several snapshot points, so kills also hit compactions.
  auto reopened = RocksDbStorage::Open(db);
  ASSERT_TRUE(reopened.ok());
  EXPECT_GT((*reopened)->FirstIndex(), 1u);
}

}  // namespace
}  // namespace ds::raft
