// Map output over the network: every mr-worker serves the runs of the maps it
// ran (MapOutputService, from its --work-dir) and fetches the runs its reduce
// tasks need from the other workers (MapOutputFetcher).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/security/credentials.h"
#include "proto/mapreduce.grpc.pb.h"

namespace ds::mr {

class MapOutputService final : public pb::MapOutputService::Service {
 public:
  // Serves <work_dir>/<job id>/mr-int-<m>-<r>.
  explicit MapOutputService(std::string work_dir) : work_dir_(std::move(work_dir)) {}
  // Streams the run in chunks of kChunkBytes; NOT_FOUND if this worker does
  // not have it (another worker ran the map, or the files were deleted).
  grpc::Status FetchPartition(grpc::ServerContext* ctx, const pb::FetchPartitionRequest* request,
                              grpc::ServerWriter<pb::FetchPartitionChunk>* writer) override;

  static constexpr size_t kChunkBytes = 1 << 20;

 private:
  const std::string work_dir_;
};

struct FetcherOptions {
  // TLS to the other workers (common/tls.h). Null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Tries per fetch while the worker is unreachable, and the pause between
  // them. A worker that stays unreachable has lost its output. Defaults: 3,
  // 200 ms.
  int attempts = 3;
  absl::Duration retry_pause = absl::Milliseconds(200);
  // Deadline of one fetch (the whole stream). Default: 5 min.
  absl::Duration deadline = absl::Minutes(5);
};

class MapOutputFetcher {
 public:
  explicit MapOutputFetcher(FetcherOptions options) : options_(std::move(options)) {}
  // The whole run; an error once every attempt failed.
  absl::StatusOr<std::string> Fetch(const std::string& address,
                                    const pb::FetchPartitionRequest& request);

 private:
  std::shared_ptr<pb::MapOutputService::Stub> StubFor(const std::string& address)
      ABSL_LOCKS_EXCLUDED(mu_);

  const FetcherOptions options_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<pb::MapOutputService::Stub>> stubs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ds::mr
