// The file half of snapshot transfers (raft/service/snapshot_files.h): a
// follower fetches a checkpoint's files from the sender, resumes a transfer
// broken many times, reuses the files it already has from the same source,
// and a transfer that cannot complete leaves its state as it was.
#include "raft/service/snapshot_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/files.h"
#include "common/grpc_server.h"
#include "common/init.h"
#include "gtest/gtest.h"
#include "raft/rsm/disk_state.h"
#include "tests/common/temp_dir.h"

namespace ds::rsm {
namespace {

using ::ds::testing::TempDir;

// Serves at most `budget` bytes per call, then breaks the call (a flaky
// network, a sender that restarts); with budget 0 it never sends anything.
class FlakyFiles final : public pb::SnapshotFiles::Service {
 public:
  FlakyFiles(std::string dir, uint64_t budget) : dir_(std::move(dir)), budget_(budget) {}
  grpc::Status Fetch(grpc::ServerContext*, const pb::FetchFileRequest* req,
                     grpc::ServerWriter<pb::FileChunk>* writer) override {
    auto data = common::ReadWholeFile(absl::StrCat(dir_, "/", req->checkpoint(), "/", req->file()));
    if (!data.ok()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "gone");
    const uint64_t end = std::min<uint64_t>(data->size(), req->offset() + budget_);
    for (uint64_t at = req->offset(); at < end; at += 16384) {
      pb::FileChunk chunk;
      chunk.set_data(data->substr(at, std::min<uint64_t>(16384, end - at)));
      if (!writer->Write(chunk)) break;
    }
    if (end == data->size()) return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection reset (test)");
  }

 private:
  const std::string dir_;
  const uint64_t budget_;
};

class SnapshotFetchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto a = DiskState::Open({.dir = a_dir_.path() + "/a", .memtable_bytes = 1 << 20});
    auto b = DiskState::Open({.dir = b_dir_.path() + "/b", .memtable_bytes = 1 << 20});
    ASSERT_TRUE(a.ok() && b.ok());
    sender_ = std::move(*a);
    receiver_ = std::move(*b);
    receiver_->app()->Put("receiver's own", "state");
    receiver_->Commit();
    Write(0, 3000);
  }
  void Write(int from, int to) {
    const std::string value(700, 'x');
    for (int i = from; i < to; ++i) {
      sender_->app()->Put(absl::StrCat("key", i), absl::StrCat(value, i));
      if (i % 300 == 0) sender_->Commit();
    }
    sender_->Commit();
  }
  void Serve(grpc::Service* service) {
    server_ = std::make_unique<common::GrpcServer>(common::GrpcServerOptions{});
    server_->AddService(service);
    ASSERT_TRUE(server_->Start().ok());
  }
  std::unique_ptr<SnapshotFetcher> Fetcher() {
    return std::make_unique<SnapshotFetcher>(SnapshotFetcherOptions{
        .snapshots_dir = receiver_->snapshots_dir(),
        .address_of = [this](uint64_t peer) { return peer == 1 ? server_->address() : ""; },
        .max_attempts = 3,
        .retry_backoff = absl::Milliseconds(5),
        .logger = common::MakeLogger("fetch-test")});
  }
  static raft::pb::Message SnapMessage(const pb::CheckpointManifest& m) {
    raft::pb::Message msg;
    msg.set_type(raft::pb::MSG_SNAP);
    msg.set_from(1);
    msg.set_to(2);
    msg.mutable_snapshot()->mutable_metadata()->set_index(m.applied_index());
    msg.mutable_snapshot()->set_data(EncodeManifest(m));
    return msg;
  }
  // Admits the manifest's message and waits (bounded) for its delivery.
  bool FetchAndWait(SnapshotFetcher& fetcher, const pb::CheckpointManifest& m,
                    absl::Duration timeout = absl::Seconds(30)) {
    auto delivered = std::make_shared<absl::Notification>();
    EXPECT_FALSE(fetcher.Admit(SnapMessage(m), [delivered](raft::pb::Message msg) {
      EXPECT_EQ(msg.type(), raft::pb::MSG_SNAP);
      delivered->Notify();
    })) << "the files are not here yet";
    return delivered->WaitForNotificationWithTimeout(timeout);
  }
  bool Complete(const pb::CheckpointManifest& m) const {
    for (const pb::CheckpointFile& f : m.files()) {
      auto here = common::ReadWholeFile(
          absl::StrCat(receiver_->snapshots_dir(), "/", m.name(), "/", f.name()));
      auto there = common::ReadWholeFile(
          absl::StrCat(sender_->snapshots_dir(), "/", m.name(), "/", f.name()));
      if (!here.ok() || !there.ok() || *here != *there) return false;
    }
    return true;
  }

  TempDir a_dir_, b_dir_;
  std::unique_ptr<DiskState> sender_, receiver_;
  std::unique_ptr<common::GrpcServer> server_;
};

TEST_F(SnapshotFetchTest, TheFilesArriveWholeBeforeTheMessageAndTheStateRestoresFromThem) {
  SnapshotFilesService files(sender_->snapshots_dir(), nullptr);
  Serve(&files);
  auto m = sender_->Checkpoint(40);
  ASSERT_TRUE(m.ok());
  auto fetcher = Fetcher();
  raft::pb::Message plain;
  plain.set_type(raft::pb::MSG_SNAP);
  plain.mutable_snapshot()->set_data("in-memory snapshot bytes");
  EXPECT_TRUE(fetcher->Admit(plain, [](raft::pb::Message) {})) << "data inline: no fetch";
  ASSERT_TRUE(FetchAndWait(*fetcher, *m));
  EXPECT_TRUE(Complete(*m));
  EXPECT_FALSE(std::filesystem::exists(receiver_->snapshots_dir() + "/" + m->name() + ".partial"));
  EXPECT_TRUE(fetcher->Admit(SnapMessage(*m), [](raft::pb::Message) {})) << "already here";
  ASSERT_TRUE(receiver_->Restore(*m).ok());
  EXPECT_EQ(receiver_->app()->Get("key2999"), absl::StrCat(std::string(700, 'x'), 2999));
  EXPECT_EQ(receiver_->app()->Get("receiver's own"), std::nullopt);
  EXPECT_EQ(fetcher->stats().completed, 1u);
}

TEST_F(SnapshotFetchTest, ATransferBrokenManyTimesResumesWhereItStopped) {
  FlakyFiles files(sender_->snapshots_dir(), 200 << 10);
  Serve(&files);
  auto m = sender_->Checkpoint(40);
  ASSERT_TRUE(m.ok());
  uint64_t total = 0;
  for (const auto& f : m->files()) total += f.size();
  ASSERT_GT(total, 1u << 20) << "several breaks needed";
  auto fetcher = Fetcher();
  ASSERT_TRUE(FetchAndWait(*fetcher, *m));
  EXPECT_TRUE(Complete(*m));
  EXPECT_GE(fetcher->stats().resumed, 5u);
  // Every byte crossed once: resumed, not restarted.
  EXPECT_EQ(fetcher->stats().bytes, total);
}

TEST_F(SnapshotFetchTest, ATransferThatCannotCompleteLeavesTheOldStateUsable) {
  FlakyFiles files(sender_->snapshots_dir(), 0);
  Serve(&files);
  auto m = sender_->Checkpoint(40);
  ASSERT_TRUE(m.ok());
  auto fetcher = Fetcher();
  EXPECT_FALSE(FetchAndWait(*fetcher, *m, absl::Seconds(3))) << "nothing to deliver";
  EXPECT_FALSE(std::filesystem::exists(receiver_->snapshots_dir() + "/" + m->name()));
  EXPECT_EQ(receiver_->app()->Get("receiver's own"), "state");
  receiver_->app()->Put("still", "writable");
  receiver_->Commit();
  EXPECT_EQ(receiver_->app()->Get("still"), "writable");
  EXPECT_FALSE(receiver_->Restore(*m).ok()) << "the incomplete checkpoint is never used";
  EXPECT_EQ(receiver_->app()->Get("receiver's own"), "state");
}

TEST_F(SnapshotFetchTest, FilesOfAnEarlierCheckpointOfTheSameSourceAreNotSentAgain) {
  SnapshotFilesService files(sender_->snapshots_dir(), nullptr);
  Serve(&files);
  auto first = sender_->Checkpoint(40);
  ASSERT_TRUE(first.ok());
  auto fetcher = Fetcher();
  ASSERT_TRUE(FetchAndWait(*fetcher, *first));
  const uint64_t bytes_first = fetcher->stats().bytes;
  Write(3000, 3100);  // a little more; most SST files stay
  auto second = sender_->Checkpoint(50);
  ASSERT_TRUE(second.ok());
  ASSERT_TRUE(FetchAndWait(*fetcher, *second));
  EXPECT_TRUE(Complete(*second));
  EXPECT_GT(fetcher->stats().reused_files, 0u);
  EXPECT_LT(fetcher->stats().bytes - bytes_first, bytes_first / 2);
  ASSERT_TRUE(receiver_->Restore(*second).ok());
  EXPECT_TRUE(receiver_->app()->Get("key3099").has_value());
}

TEST_F(SnapshotFetchTest, TheServicePacesTransfersAndRefusesPathsOutsideItsDirectory) {
  SnapshotFilesService files(sender_->snapshots_dir(), nullptr, /*bytes_per_second=*/4 << 20);
  Serve(&files);
  auto m = sender_->Checkpoint(40);
  ASSERT_TRUE(m.ok());
  uint64_t total = 0;
  for (const auto& f : m->files()) total += f.size();
  auto fetcher = Fetcher();
  const absl::Time start = absl::Now();
  ASSERT_TRUE(FetchAndWait(*fetcher, *m));
  EXPECT_GE(absl::Now() - start, absl::Seconds(0.8 * total / (4 << 20)));

  auto stub = pb::SnapshotFiles::NewStub(
      grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  for (const auto& [ckpt, file] : std::vector<std::pair<std::string, std::string>>{
           {"..", "CURRENT_DB"}, {m->name(), "../../CURRENT_DB"}, {m->name() + ".partial", "x"}}) {
    grpc::ClientContext ctx;
    pb::FetchFileRequest req;
    req.set_checkpoint(ckpt);
    req.set_file(file);
    auto reader = stub->Fetch(&ctx, req);
    pb::FileChunk chunk;
    EXPECT_FALSE(reader->Read(&chunk));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << ckpt << "/" << file;
  }
}

}  // namespace
}  // namespace ds::rsm
