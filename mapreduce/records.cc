#include "mapreduce/records.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <queue>
#include <vector>

#include "absl/strings/str_cat.h"

namespace ds::mr {

uint32_t KeyHash(std::string_view key) {
  uint32_t h = 2166136261u;
  for (unsigned char c : key) {
    h ^= c;
    h *= 16777619u;
  }
  return h & 0x7fffffff;
}

std::string ErrnoMessage(const std::string& what, int err) {
  return absl::StrCat(what, ": ", strerror(err));
}

absl::StatusOr<std::unique_ptr<RecordWriter>> RecordWriter::Create(const std::string& path) {
  FILE* f = fopen(path.c_str(), "wb");
  if (f == nullptr) return absl::FailedPreconditionError(ErrnoMessage("create " + path, errno));
  setvbuf(f, nullptr, _IOFBF, 1 << 20);
  return std::unique_ptr<RecordWriter>(new RecordWriter(f, path));
}

RecordWriter::~RecordWriter() {
  if (f_ != nullptr) fclose(f_);
}

void RecordWriter::Write(std::string_view key, std::string_view value) {
  uint32_t lens[2] = {static_cast<uint32_t>(key.size()), static_cast<uint32_t>(value.size())};
  fwrite(lens, sizeof(lens), 1, f_);
  fwrite(key.data(), 1, key.size(), f_);
  fwrite(value.data(), 1, value.size(), f_);
  bytes_ += sizeof(lens) + key.size() + value.size();
}

absl::Status RecordWriter::Close() {
  bool failed = ferror(f_) != 0;
  failed |= fclose(f_) != 0;
  f_ = nullptr;
  if (failed) return absl::DataLossError(ErrnoMessage("write " + path_, errno));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RecordReader>> RecordReader::Open(const std::string& path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (f == nullptr) return absl::NotFoundError(ErrnoMessage("open " + path, errno));
  setvbuf(f, nullptr, _IOFBF, 1 << 20);
  return std::unique_ptr<RecordReader>(new RecordReader(f, path));
}

RecordReader::~RecordReader() { fclose(f_); }

absl::StatusOr<bool> RecordReader::Next(std::string* key, std::string* value) {
  uint32_t lens[2];
  size_t n = fread(lens, 1, sizeof(lens), f_);
  if (n == 0 && feof(f_)) return false;
  if (n != sizeof(lens)) return absl::DataLossError("truncated record in " + path_);
  key->resize(lens[0]);
  value->resize(lens[1]);
  if (fread(key->data(), 1, lens[0], f_) != lens[0] ||
      fread(value->data(), 1, lens[1], f_) != lens[1]) {
    return absl::DataLossError("truncated record in " + path_);
  }
  return true;
}

ExternalSorter::ExternalSorter(std::string spill_dir, uint64_t memory_budget_bytes)
    : spill_dir_(std::move(spill_dir)), memory_budget_bytes_(memory_budget_bytes) {}

ExternalSorter::~ExternalSorter() {
  for (const std::string& run : runs_) unlink(run.c_str());
}

absl::Status ExternalSorter::Add(std::string_view key, std::string_view value) {
  uint64_t prefix = 0;
  for (size_t i = 0; i < 8; ++i) {
    prefix = (prefix << 8) | (i < key.size() ? static_cast<unsigned char>(key[i]) : 0);
  }
  recs_.push_back(Rec{prefix, arena_.size(), static_cast<uint32_t>(key.size()),
                      static_cast<uint32_t>(value.size())});
  arena_.append(key);
  arena_.append(value);
  if (arena_.size() + recs_.size() * sizeof(Rec) > memory_budget_bytes_) return Spill();
  return absl::OkStatus();
}

void ExternalSorter::SortInMemory() {
  std::sort(recs_.begin(), recs_.end(), [this](const Rec& a, const Rec& b) {
    // Different prefixes order the keys as a byte-wise comparison would (a
    // shorter key is padded with zeros, below any byte it lacks... except a
    // real zero byte: equal prefixes fall through to the full comparison).
    if (a.key_prefix != b.key_prefix) return a.key_prefix < b.key_prefix;
    bool same_key = a.key_len == b.key_len && a.key_len <= 8;
    if (!same_key) {
      int c = Key(a).compare(Key(b));
      if (c != 0) return c < 0;
    }
    return Value(a) < Value(b);
  });
}

absl::Status ExternalSorter::Spill() {
  SortInMemory();
  static std::atomic<uint64_t> counter{0};
  std::string path = absl::StrCat(spill_dir_, "/spill-", getpid(), "-", counter++);
  auto writer = RecordWriter::Create(path);
  if (!writer.ok()) return writer.status();
  runs_.push_back(path);
  for (const Rec& r : recs_) (*writer)->Write(Key(r), Value(r));
  recs_.clear();
  arena_.clear();
  arena_.shrink_to_fit();
  return (*writer)->Close();
}

absl::Status ExternalSorter::ForEach(
    const std::function<absl::Status(std::string_view, std::string_view)>& fn) {
  if (runs_.empty()) {
    SortInMemory();
    for (const Rec& r : recs_) {
      if (auto st = fn(Key(r), Value(r)); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  if (!recs_.empty()) {
    if (auto st = Spill(); !st.ok()) return st;
  }
  // k-way merge of the sorted runs.
  struct Head {
    std::string key, value;
    size_t run;
  };
  auto greater = [](const Head* a, const Head* b) {
    int c = a->key.compare(b->key);
    if (c != 0) return c > 0;
    if (a->value != b->value) return a->value > b->value;
    return a->run > b->run;
  };
  std::vector<std::unique_ptr<RecordReader>> readers;
  std::vector<Head> heads(runs_.size());
  std::priority_queue<Head*, std::vector<Head*>, decltype(greater)> queue(greater);
  for (size_t i = 0; i < runs_.size(); ++i) {
    auto reader = RecordReader::Open(runs_[i]);
    if (!reader.ok()) return reader.status();
    readers.push_back(std::move(*reader));
    heads[i].run = i;
    auto more = readers[i]->Next(&heads[i].key, &heads[i].value);
    if (!more.ok()) return more.status();
    if (*more) queue.push(&heads[i]);
  }
  while (!queue.empty()) {
    Head* h = queue.top();
    queue.pop();
    if (auto st = fn(h->key, h->value); !st.ok()) return st;
    auto more = readers[h->run]->Next(&h->key, &h->value);
    if (!more.ok()) return more.status();
    if (*more) queue.push(h);
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view contents) {
  static std::atomic<uint64_t> counter{0};
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  // The temporary name never matches mr-out*.
  std::string tmp = absl::StrCat(dir, "/tmp-", getpid(), "-", counter++);
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::FailedPreconditionError(ErrnoMessage("create " + tmp, errno));
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = write(fd, contents.data() + done, contents.size() - done);
    if (n < 0) {
      int err = errno;
      close(fd);
      unlink(tmp.c_str());
      return absl::DataLossError(ErrnoMessage("write " + tmp, err));
    }
    done += static_cast<size_t>(n);
  }
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return absl::FailedPreconditionError(ErrnoMessage("rename to " + path, err));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(ErrnoMessage("read input " + path, errno));
  std::string out;
  char buf[1 << 16];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      int err = errno;
      close(fd);
      return absl::DataLossError(ErrnoMessage("read input " + path, err));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

}  // namespace ds::mr

namespace ds::mr {

absl::StatusOr<std::string> ReadSplit(const std::string& path, uint64_t offset, uint64_t length) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(ErrnoMessage("read input " + path, errno));
  std::vector<char> buf(1 << 16);
  // Reads up to `max` bytes at `pos` into buf; 0 at the end of the file, -1
  // (errno set) on error.
  auto read_at = [&](uint64_t pos, uint64_t max) {
    ssize_t n;
    do {
      n = pread(fd, buf.data(), std::min<uint64_t>(buf.size(), max), static_cast<off_t>(pos));
    } while (n < 0 && errno == EINTR);
    return n;
  };
  // Scans from `pos` for a newline; returns the position after it, or the
  // end of the file.
  auto after_newline = [&](uint64_t pos, std::string* copy) -> absl::StatusOr<uint64_t> {
    while (true) {
      ssize_t n = read_at(pos, buf.size());
      if (n < 0) return absl::DataLossError(ErrnoMessage("read input " + path, errno));
      if (n == 0) return pos;
      const char* nl = static_cast<const char*>(memchr(buf.data(), '\n', static_cast<size_t>(n)));
      size_t take =
          nl != nullptr ? static_cast<size_t>(nl - buf.data()) + 1 : static_cast<size_t>(n);
      if (copy != nullptr) copy->append(buf.data(), take);
      pos += take;
      if (nl != nullptr) return pos;
    }
  };
  std::string out;
  absl::Status status;
  // The first line starting at or after `offset` follows the first newline at
  // or after offset - 1; the line before belongs to the previous split.
  uint64_t start = offset;
  if (offset > 0) {
    auto s = after_newline(offset - 1, nullptr);
    if (s.ok()) start = *s;
    status = s.status();
  }
  const uint64_t end = offset + length;
  uint64_t pos = start;
  while (status.ok() && pos < end) {
    ssize_t n = read_at(pos, end - pos);
    if (n < 0) status = absl::DataLossError(ErrnoMessage("read input " + path, errno));
    if (n <= 0) break;
    out.append(buf.data(), static_cast<size_t>(n));
    pos += static_cast<uint64_t>(n);
  }
  // The last line started before `end`: it is ours to its end.
  if (status.ok() && pos == end && !out.empty() && out.back() != '\n') {
    status = after_newline(pos, &out).status();
  }
  close(fd);
  if (!status.ok()) return status;
  return out;
}

}  // namespace ds::mr
