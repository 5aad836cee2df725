#include "mapreduce/map_output_service.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"

namespace ds::mr {
namespace {

// Job ids come from the coordinator ("job-12"); anything that could leave
// the work dir is refused.
bool SafeName(const std::string& s) {
  if (s.empty() || s[0] == '.') return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

grpc::Status MapOutputService::FetchPartition(grpc::ServerContext* ctx,
                                              const pb::FetchPartitionRequest* request,
                                              grpc::ServerWriter<pb::FetchPartitionChunk>* writer) {
  if (!SafeName(request->job_id()) || request->map_index() < 0 || request->reduce_index() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad partition request");
  }
  std::string path = absl::StrCat(work_dir_, "/", request->job_id(), "/mr-int-",
                                  request->map_index(), "-", request->reduce_index());
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    return grpc::Status(err == ENOENT ? grpc::StatusCode::NOT_FOUND : grpc::StatusCode::INTERNAL,
                        absl::StrCat("open ", path, ": ", strerror(err)));
  }
  pb::FetchPartitionChunk chunk;
  std::string* buf = chunk.mutable_data();
  grpc::Status status = grpc::Status::OK;
  while (!ctx->IsCancelled()) {
    buf->resize(kChunkBytes);
    ssize_t n = read(fd, buf->data(), kChunkBytes);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      status = grpc::Status(grpc::StatusCode::INTERNAL,
                            absl::StrCat("read ", path, ": ", strerror(errno)));
      break;
    }
    if (n == 0) break;
    buf->resize(static_cast<size_t>(n));
    if (!writer->Write(chunk)) break;  // the reducer went away
  }
  close(fd);
  return status;
}

std::shared_ptr<pb::MapOutputService::Stub> MapOutputFetcher::StubFor(const std::string& address) {
  absl::MutexLock lock(&mu_);
  auto& stub = stubs_[address];
  if (stub == nullptr) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(2 * static_cast<int>(MapOutputService::kChunkBytes));
    // A worker that is gone is detected by a failed connection: retry it
    // within our own schedule, not gRPC's backoff (up to two minutes).
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    auto channel = grpc::CreateCustomChannel(
        address,
        options_.credentials != nullptr ? options_.credentials : grpc::InsecureChannelCredentials(),
        args);
    stub = pb::MapOutputService::NewStub(channel);
  }
  return stub;
}

absl::StatusOr<std::string> MapOutputFetcher::Fetch(const std::string& address,
                                                    const pb::FetchPartitionRequest& request) {
  std::shared_ptr<pb::MapOutputService::Stub> stub = StubFor(address);
  grpc::Status st;
  for (int attempt = 0; attempt < std::max(1, options_.attempts); ++attempt) {
    if (attempt > 0) absl::SleepFor(options_.retry_pause);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.deadline));
    std::unique_ptr<grpc::ClientReader<pb::FetchPartitionChunk>> reader =
        stub->FetchPartition(&ctx, request);
    std::string data;
    pb::FetchPartitionChunk chunk;
    while (reader->Read(&chunk)) data.append(chunk.data());
    st = reader->Finish();
    if (st.ok()) return data;
    // Only an unreachable worker is worth another try: NOT_FOUND and the
    // like will not change.
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE) break;
  }
  return absl::UnavailableError(
      absl::StrCat(st.error_message(), " (", static_cast<int>(st.error_code()), ")"));
}

}  // namespace ds::mr
