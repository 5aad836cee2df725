// The file half of a snapshot transfer for state machines kept on disk
// (raft/rsm/disk_state.h). The leader's InstallSnapshot carries only the
// checkpoint's manifest; the follower fetches the files itself:
//   - SnapshotFilesService (on the Raft port) serves this replica's
//     checkpoint files from an offset, in chunks (gRPC flow control paces
//     them; no deadline on the whole transfer);
//   - SnapshotFetcher is the Node's SnapshotGate: for a manifest whose
//     checkpoint is not complete here, it fetches the files into
//     snapshots/NAME.partial on its own thread, resuming where a broken
//     transfer stopped (and reusing SST files of earlier checkpoints from
//     the same source), then fsyncs them, renames the directory to
//     snapshots/NAME and hands the message to the core. Until then the old
//     state is untouched, and a transfer that cannot finish leaves it so.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "proto/rsm.grpc.pb.h"
#include "raft/node/node.h"
#include "spdlog/logger.h"

namespace ds::rsm {

class SnapshotFilesService final : public pb::SnapshotFiles::Service {
 public:
  // `authorize` (may be null) decides whether a call may read the files.
  // `bytes_per_second` paces each transfer (0: as fast as the peer reads).
  SnapshotFilesService(std::string snapshots_dir,
                       std::function<grpc::Status(const grpc::ServerContextBase&)> authorize,
                       uint64_t bytes_per_second = 0, uint64_t chunk_bytes = 1 << 20)
      : dir_(std::move(snapshots_dir)),
        authorize_(std::move(authorize)),
        rate_(bytes_per_second),
        chunk_(chunk_bytes) {}

  grpc::Status Fetch(grpc::ServerContext* ctx, const pb::FetchFileRequest* request,
                     grpc::ServerWriter<pb::FileChunk>* writer) override;

 private:
  const std::string dir_;
  const std::function<grpc::Status(const grpc::ServerContextBase&)> authorize_;
  const uint64_t rate_;
  const uint64_t chunk_;
};

struct SnapshotFetcherOptions {
  // DiskState::snapshots_dir(). Required.
  std::string snapshots_dir;
  // The Raft address of a peer ("" if unknown). Required.
  std::function<std::string(uint64_t peer)> address_of;
  // TLS to the peers; null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Metadata for each call to `peer` (the replica's identity). Default: none.
  std::function<std::vector<std::pair<std::string, std::string>>(uint64_t peer)> call_metadata;
  // Broken transfers retried without progress before the fetch is given up
  // (the partial files stay for the next attempt). Default: 5.
  int max_attempts = 5;
  // Wait before the n-th retry: n times this, at most 2 s. Default: 200 ms.
  absl::Duration retry_backoff = absl::Milliseconds(200);
  // Logger; required.
  std::shared_ptr<spdlog::logger> logger;
};

class SnapshotFetcher final : public raft::SnapshotGate {
 public:
  explicit SnapshotFetcher(SnapshotFetcherOptions options);
  ~SnapshotFetcher() override;  // Stop()

  bool Admit(const raft::pb::Message& msg, std::function<void(raft::pb::Message)> deliver) override;
  void Stop() override;

  // Counters for tests: fetches completed, file bytes received, files reused
  // from another checkpoint, broken transfers resumed.
  struct Stats {
    uint64_t completed = 0;
    uint64_t bytes = 0;
    uint64_t reused_files = 0;
    uint64_t resumed = 0;
  };
  Stats stats() const;

 private:
  struct Wanted {
    raft::pb::Message msg;
    pb::CheckpointManifest manifest;
    std::function<void(raft::pb::Message)> deliver;
  };
  void Run();
  // Fetches every file; true once snapshots/NAME is complete.
  bool Fetch(const Wanted& w);
  // One file from `offset` into `path`; OK at the end of the file.
  grpc::Status FetchFile(uint64_t from, pb::SnapshotFiles::Stub* stub, const std::string& name,
                         const std::string& file, uint64_t offset, const std::string& path);
  // Links `file` of the same source from another checkpoint here; true if so.
  bool Reuse(const pb::CheckpointManifest& m, const pb::CheckpointFile& f, const std::string& to);
  bool Superseded() const;

  const SnapshotFetcherOptions options_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<Wanted> wanted_ ABSL_GUARDED_BY(mu_);  // the newest manifest not yet taken
  std::string fetching_ ABSL_GUARDED_BY(mu_);          // name being fetched
  uint64_t fetching_index_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::ClientContext* call_ ABSL_GUARDED_BY(mu_) = nullptr;
  Stats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace ds::rsm
