// The Node driver's write ordering, checked on the calls it makes to Storage.
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "raft/node/node.h"
#include "raft/storage/memory_storage.h"

namespace ds::raft {
namespace {

// Records every write the Node makes, in order, and forwards it.
class RecordingStorage : public Storage {
 public:
  explicit RecordingStorage(std::vector<std::string>* calls, absl::Mutex* mu)
      : calls_(calls), mu_(mu) {}
  absl::StatusOr<InitialState> GetInitialState() override { return inner_.GetInitialState(); }
  absl::StatusOr<std::vector<pb::Entry>> Entries(uint64_t lo, uint64_t hi,
                                                 uint64_t max_bytes) override {
    return inner_.Entries(lo, hi, max_bytes);
  }
  absl::StatusOr<uint64_t> Term(uint64_t i) override { return inner_.Term(i); }
  uint64_t FirstIndex() override { return inner_.FirstIndex(); }
  uint64_t LastIndex() override { return inner_.LastIndex(); }
  uint64_t SnapshotIndex() override { return inner_.SnapshotIndex(); }
  absl::StatusOr<pb::Snapshot> GetSnapshot() override { return inner_.GetSnapshot(); }
  absl::Status Save(const pb::HardState* hs, const std::vector<pb::Entry>& entries,
                    bool sync) override {
    Record(hs != nullptr ? "save commit=" + std::to_string(hs->commit()) : "save entries");
    return inner_.Save(hs, entries, sync);
  }
  absl::Status ApplySnapshot(const pb::Snapshot& snapshot) override {
    Record("apply_snapshot index=" + std::to_string(snapshot.metadata().index()));
    return inner_.ApplySnapshot(snapshot);
  }
  using Storage::CreateSnapshot;
  absl::Status CreateSnapshot(uint64_t index, const pb::ConfState& conf_state, std::string data,
                              const LogRetention& keep) override {
    return inner_.CreateSnapshot(index, conf_state, std::move(data), keep);
  }
  uint64_t RaftStateBytes() override { return inner_.RaftStateBytes(); }
  uint64_t SnapshotBytes() override { return inner_.SnapshotBytes(); }

 private:
  void Record(std::string call) {
    absl::MutexLock lock(mu_);
    calls_->push_back(std::move(call));
  }
  MemoryStorage inner_;
  std::vector<std::string>* calls_;
  absl::Mutex* mu_;
};

// A transport that lets the test inject messages and drops what the Node sends.
class InjectingTransport : public Transport {
 public:
  explicit InjectingTransport(Handler* handler) : handler_(handler) {}
  void Start(Handler handler) override { *handler_ = std::move(handler); }
  void Send(std::vector<pb::Message>) override {}
  void Stop() override {}

 private:
  Handler* handler_;
};

// A follower that receives a snapshot must install it before it saves the
// hard state whose commit index is the snapshot's: otherwise a crash between
// the two writes leaves a commit index pointing into its old log, whose
// uncommitted tail would then be applied on restart.
TEST(RaftNode, InstallsAReceivedSnapshotBeforeSavingItsCommitIndex) {
  absl::Mutex mu;
  std::vector<std::string> calls;
  Transport::Handler deliver;
  NodeOptions options;
  options.id = 1;
  options.raft.peers = {1, 2, 3};
  options.raft.election_ticks = 1000;  // stay a follower
  options.tick_interval = absl::Milliseconds(10);
  auto node = Node::Start(options, std::make_unique<RecordingStorage>(&calls, &mu),
                          std::make_unique<InjectingTransport>(&deliver), [](ApplyBatch) {});
  ASSERT_TRUE(node.ok()) << node.status();
  ASSERT_TRUE(deliver);

  pb::Message snap;
  snap.set_type(pb::MSG_SNAP);
  snap.set_from(2);
  snap.set_to(1);
  snap.set_term(5);
  pb::Snapshot* s = snap.mutable_snapshot();
  s->mutable_metadata()->set_index(10);
  s->mutable_metadata()->set_term(4);
  for (uint64_t v : {1, 2, 3}) s->mutable_metadata()->mutable_conf_state()->add_voters(v);
  s->set_data("state at 10");
  deliver(snap);

  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline && (*node)->GetStatus().commit < 10) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ((*node)->GetStatus().commit, 10u);
  (*node)->Stop();

  absl::MutexLock lock(&mu);
  int applied_at = -1;
  for (int i = 0; i < static_cast<int>(calls.size()); ++i) {
    if (calls[i] == "apply_snapshot index=10") applied_at = i;
    if (calls[i] == "save commit=10") {
      EXPECT_NE(applied_at, -1) << "commit index 10 saved before the snapshot was installed";
    }
  }
  EXPECT_NE(applied_at, -1) << "snapshot never installed";
}

}  // namespace
}  // namespace ds::raft
