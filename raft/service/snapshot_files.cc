#include "raft/service/snapshot_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "raft/rsm/disk_state.h"

namespace ds::rsm {
namespace {

constexpr char kPartial[] = ".partial";

// Every file of a checkpoint is written once, or appended to (WAL,
// MANIFEST), so the same name and size in another checkpoint of the same
// source is the same content; CURRENT alone is rewritten in place.
bool IsShareable(const std::string& file) { return file != "CURRENT"; }

double MiB(uint64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

}  // namespace

grpc::Status SnapshotFilesService::Fetch(grpc::ServerContext* ctx,
                                         const pb::FetchFileRequest* request,
                                         grpc::ServerWriter<pb::FileChunk>* writer) {
  if (authorize_) {
    if (grpc::Status st = authorize_(*ctx); !st.ok()) return st;
  }
  if (!IsPlainName(request->checkpoint()) || !IsPlainName(request->file()) ||
      absl::EndsWith(request->checkpoint(), kPartial)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad checkpoint or file name");
  }
  const std::string path = absl::StrCat(dir_, "/", request->checkpoint(), "/", request->file());
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return errno == ENOENT
               ? grpc::Status(grpc::StatusCode::NOT_FOUND,
                              absl::StrCat("no checkpoint file ", request->checkpoint(), "/",
                                           request->file(), " (replaced by a newer snapshot?)"))
               : grpc::Status(grpc::StatusCode::INTERNAL, "cannot open " + path);
  }
  const uint64_t chunk = rate_ > 0 ? std::clamp<uint64_t>(rate_ / 10, 4096, chunk_) : chunk_;
  std::string buf(chunk, '\0');
  off_t offset = static_cast<off_t>(request->offset());
  grpc::Status status;
  const absl::Time start = absl::Now();
  uint64_t sent = 0;
  for (;;) {
    if (ctx->IsCancelled()) break;
    if (rate_ > 0) {
      const absl::Time due = start + absl::Seconds(static_cast<double>(sent) / rate_);
      if (due > absl::Now()) absl::SleepFor(due - absl::Now());
    }
    ssize_t n = pread(fd, buf.data(), buf.size(), offset);
    if (n < 0) {
      status = grpc::Status(grpc::StatusCode::INTERNAL, "cannot read " + path);
      break;
    }
    if (n == 0) break;
    offset += n;
    sent += static_cast<uint64_t>(n);
    pb::FileChunk out;
    out.set_data(buf.data(), static_cast<size_t>(n));
    if (!writer->Write(out)) break;  // the fetcher went away
  }
  close(fd);
  return status;
}

SnapshotFetcher::SnapshotFetcher(SnapshotFetcherOptions options) : options_(std::move(options)) {
  thread_ = std::thread([this] { Run(); });
}

SnapshotFetcher::~SnapshotFetcher() { Stop(); }

void SnapshotFetcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    if (call_ != nullptr) call_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

SnapshotFetcher::Stats SnapshotFetcher::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

bool SnapshotFetcher::Admit(const raft::pb::Message& msg,
                            std::function<void(raft::pb::Message)> deliver) {
  absl::StatusOr<std::optional<pb::CheckpointManifest>> manifest =
      DecodeManifest(msg.snapshot().data());
  if (!manifest.ok()) {
    options_.logger->error("snapshot from {} dropped: {}", msg.from(),
                           manifest.status().ToString());
    return false;
  }
  if (!manifest->has_value()) return true;  // carries its data
  const pb::CheckpointManifest& m = **manifest;
  std::error_code ec;
  if (std::filesystem::is_directory(absl::StrCat(options_.snapshots_dir, "/", m.name()), ec)) {
    return true;  // complete here already
  }
  absl::MutexLock lock(&mu_);
  if (stop_ || fetching_ == m.name()) return false;
  if (wanted_ && wanted_->manifest.applied_index() >= m.applied_index()) return false;
  if (!fetching_.empty() && fetching_index_ >= m.applied_index()) return false;
  wanted_ = Wanted{msg, m, std::move(deliver)};
  return false;
}

bool SnapshotFetcher::Superseded() const {
  absl::MutexLock lock(&mu_);
  return stop_ || (wanted_ && wanted_->manifest.applied_index() > fetching_index_);
}

void SnapshotFetcher::Run() {
  for (;;) {
    Wanted w;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](SnapshotFetcher* f)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(f->mu_) { return f->stop_ || f->wanted_.has_value(); },
          this));
      if (stop_) return;
      w = std::move(*wanted_);
      wanted_.reset();
      fetching_ = w.manifest.name();
      fetching_index_ = w.manifest.applied_index();
    }
    const bool done = Fetch(w);
    {
      absl::MutexLock lock(&mu_);
      fetching_.clear();
      if (done) ++stats_.completed;
      if (stop_) return;
    }
    // Not under mu_: the Node takes its own lock. Stop() joins this thread
    // before it returns, so no delivery follows it.
    if (done) w.deliver(std::move(w.msg));
  }
}

bool SnapshotFetcher::Reuse(const pb::CheckpointManifest& m, const pb::CheckpointFile& f,
                            const std::string& to) {
  if (!IsShareable(f.name())) return false;
  const std::string source = absl::StrFormat("-%016x", m.source_id());
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(options_.snapshots_dir, ec)) {
    std::string dir = entry.path().filename().string();
    std::string base = dir;
    if (absl::EndsWith(base, kPartial)) base.resize(base.size() - std::strlen(kPartial));
    if (base == m.name() || !absl::EndsWith(base, source)) continue;
    const std::string candidate = absl::StrCat(entry.path().string(), "/", f.name());
    absl::StatusOr<uint64_t> size = common::FileSize(candidate);
    if (size.ok() && *size == f.size() && link(candidate.c_str(), to.c_str()) == 0) return true;
  }
  return false;
}

grpc::Status SnapshotFetcher::FetchFile(uint64_t from, pb::SnapshotFiles::Stub* stub,
                                        const std::string& name, const std::string& file,
                                        uint64_t offset, const std::string& path) {
  grpc::ClientContext ctx;
  if (options_.call_metadata) {
    for (const auto& [key, value] : options_.call_metadata(from)) ctx.AddMetadata(key, value);
  }
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return grpc::Status(grpc::StatusCode::CANCELLED, "stopping");
    call_ = &ctx;
  }
  pb::FetchFileRequest request;
  request.set_checkpoint(name);
  request.set_file(file);
  request.set_offset(offset);
  grpc::Status status;
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    status = grpc::Status(grpc::StatusCode::INTERNAL, "cannot create " + path);
  } else {
    std::unique_ptr<grpc::ClientReader<pb::FileChunk>> reader = stub->Fetch(&ctx, request);
    pb::FileChunk chunk;
    while (reader->Read(&chunk)) {
      const std::string& data = chunk.data();
      for (size_t done = 0; done < data.size();) {
        ssize_t n = write(fd, data.data() + done, data.size() - done);
        if (n < 0) {
          status = grpc::Status(grpc::StatusCode::INTERNAL, "cannot write " + path);
          ctx.TryCancel();
          break;
        }
        done += static_cast<size_t>(n);
      }
      {
        absl::MutexLock lock(&mu_);
        stats_.bytes += data.size();
      }
      if (!status.ok()) break;
      if (Superseded()) ctx.TryCancel();
    }
    grpc::Status finish = reader->Finish();
    if (status.ok()) status = finish;
    close(fd);
  }
  absl::MutexLock lock(&mu_);
  call_ = nullptr;
  return status;
}

bool SnapshotFetcher::Fetch(const Wanted& w) {
  const pb::CheckpointManifest& m = w.manifest;
  const uint64_t from = w.msg.from();
  const std::string address = options_.address_of(from);
  if (address.empty()) {
    options_.logger->warn("snapshot {} from {}: no address known for it", m.name(), from);
    return false;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stub = pb::SnapshotFiles::NewStub(grpc::CreateCustomChannel(
      address,
      options_.credentials != nullptr ? options_.credentials : grpc::InsecureChannelCredentials(),
      args));
  const std::string partial = absl::StrCat(options_.snapshots_dir, "/", m.name(), kPartial);
  std::error_code ec;
  std::filesystem::create_directories(partial, ec);
  uint64_t total = 0;
  for (const pb::CheckpointFile& f : m.files()) total += f.size();
  options_.logger->info("fetching snapshot {} (index {}) from {}: {} files, {:.1f} MiB", m.name(),
                        m.applied_index(), from, m.files_size(), MiB(total));
  const absl::Time start = absl::Now();
  absl::Time last_report = start;
  uint64_t received = 0;
  for (const pb::CheckpointFile& f : m.files()) {
    const std::string path = absl::StrCat(partial, "/", f.name());
    int failures = 0;
    for (;;) {
      absl::StatusOr<uint64_t> have = common::FileSize(path);
      uint64_t offset = have.ok() ? *have : 0;
      if (offset > f.size()) {
        unlink(path.c_str());
        offset = 0;
      }
      if (offset == f.size()) break;
      if (offset == 0 && Reuse(m, f, path)) {
        absl::MutexLock lock(&mu_);
        ++stats_.reused_files;
        break;
      }
      grpc::Status st = FetchFile(from, stub.get(), m.name(), f.name(), offset, path);
      absl::StatusOr<uint64_t> now = common::FileSize(path);
      const uint64_t got = now.ok() ? *now : 0;
      received += got > offset ? got - offset : 0;
      if (absl::Now() - last_report > absl::Seconds(5)) {
        last_report = absl::Now();
        options_.logger->info("fetching snapshot {}: {:.1f} of {:.1f} MiB", m.name(), MiB(received),
                              MiB(total));
      }
      if (st.ok() && got == f.size()) break;
      if (Superseded()) return false;
      if (st.error_code() == grpc::StatusCode::NOT_FOUND) {
        options_.logger->info("snapshot {}: {} (the leader will send a newer one)", m.name(),
                              st.error_message());
        return false;
      }
      if (st.ok()) st = grpc::Status(grpc::StatusCode::DATA_LOSS, "file ended early");
      failures = got > offset ? 0 : failures + 1;
      if (failures >= options_.max_attempts) {
        options_.logger->warn("snapshot {}: giving up after {} tries without progress: {}",
                              m.name(), failures, st.error_message());
        return false;
      }
      {
        absl::MutexLock lock(&mu_);
        ++stats_.resumed;
      }
      options_.logger->info("snapshot {}: transfer of {} broken at {} bytes ({}); resuming",
                            m.name(), f.name(), got, st.error_message());
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stop_),
                           std::min(options_.retry_backoff * (failures + 1), absl::Seconds(2)));
      if (stop_) return false;
    }
  }
  for (const pb::CheckpointFile& f : m.files()) {
    if (absl::Status s = common::SyncPath(absl::StrCat(partial, "/", f.name())); !s.ok()) {
      options_.logger->error("snapshot {}: {}", m.name(), s.ToString());
      return false;
    }
  }
  const std::string done = absl::StrCat(options_.snapshots_dir, "/", m.name());
  if (absl::Status s = common::SyncPath(partial); !s.ok()) return false;
  if (rename(partial.c_str(), done.c_str()) != 0) {
    options_.logger->error("snapshot {}: cannot rename {}", m.name(), partial);
    return false;
  }
  if (absl::Status s = common::SyncPath(options_.snapshots_dir); !s.ok()) return false;
  const double seconds = std::max(1e-3, absl::ToDoubleSeconds(absl::Now() - start));
  options_.logger->info("fetched snapshot {}: {:.1f} MiB received in {:.2f} s ({:.1f} MiB/s)",
                        m.name(), MiB(received), seconds, MiB(received) / seconds);
  return true;
}

}  // namespace ds::rsm
