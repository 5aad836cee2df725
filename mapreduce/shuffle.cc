#include "mapreduce/shuffle.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <queue>

#include "absl/strings/str_cat.h"
#include "mapreduce/records.h"

namespace ds::mr {
namespace {

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool GetVarint(std::string_view data, size_t* pos, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64 && *pos < data.size(); shift += 7) {
    uint8_t b = static_cast<uint8_t>(data[(*pos)++]);
    result |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

bool GetBytes(std::string_view data, size_t* pos, std::string_view* out) {
  uint64_t len;
  if (!GetVarint(data, pos, &len) || len > data.size() - *pos) return false;
  *out = data.substr(*pos, len);
  *pos += len;
  return true;
}

constexpr size_t kWriteBuffer = 1 << 20;

}  // namespace

absl::Status RenameIntoPlace(const std::string& tmp, const std::string& path) {
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return absl::FailedPreconditionError(ErrnoMessage("rename " + tmp + " to " + path, err));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RunWriter>> RunWriter::Create(const std::string& path) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::FailedPreconditionError(ErrnoMessage("create " + path, errno));
  return std::unique_ptr<RunWriter>(new RunWriter(fd, path));
}

RunWriter::~RunWriter() {
  if (fd_ >= 0) close(fd_);
}

void RunWriter::WriteGroup(std::string_view key, const std::vector<std::string_view>& values) {
  size_t before = buffer_.size();
  PutVarint(&buffer_, key.size());
  buffer_.append(key);
  PutVarint(&buffer_, values.size());
  for (std::string_view v : values) {
    PutVarint(&buffer_, v.size());
    buffer_.append(v);
  }
  bytes_ += buffer_.size() - before;
  if (buffer_.size() >= kWriteBuffer) Flush();
}

void RunWriter::Flush() {
  size_t done = 0;
  while (done < buffer_.size() && error_ == 0) {
    ssize_t n = write(fd_, buffer_.data() + done, buffer_.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error_ = errno;
      break;
    }
    done += static_cast<size_t>(n);
  }
  buffer_.clear();
}

absl::Status RunWriter::Close() {
  Flush();
  if (close(fd_) != 0 && error_ == 0) error_ = errno;
  fd_ = -1;
  if (error_ != 0) return absl::DataLossError(ErrnoMessage("write " + path_, error_));
  return absl::OkStatus();
}

absl::StatusOr<bool> RunReader::Next() {
  if (have_group_) {
    // Skip the current group's values.
    pos_ = values_begin_;
    for (uint64_t i = 0; i < num_values_; ++i) {
      std::string_view v;
      if (!GetBytes(data_, &pos_, &v)) return absl::DataLossError("malformed map output run");
    }
    have_group_ = false;
  }
  if (pos_ == data_.size()) return false;
  if (!GetBytes(data_, &pos_, &key_) || !GetVarint(data_, &pos_, &num_values_)) {
    return absl::DataLossError("malformed map output run");
  }
  values_begin_ = pos_;
  have_group_ = true;
  return true;
}

absl::Status RunReader::Values(std::vector<std::string_view>* out) const {
  size_t pos = values_begin_;
  for (uint64_t i = 0; i < num_values_; ++i) {
    std::string_view v;
    if (!GetBytes(data_, &pos, &v)) return absl::DataLossError("malformed map output run");
    out->push_back(v);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(ErrnoMessage("open " + path, errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return absl::InternalError(ErrnoMessage("stat " + path, err));
  }
  size_t size = static_cast<size_t>(st.st_size);
  void* addr = nullptr;
  if (size > 0) {
    addr = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      int err = errno;
      close(fd);
      return absl::InternalError(ErrnoMessage("mmap " + path, err));
    }
    madvise(addr, size, MADV_SEQUENTIAL);
  }
  close(fd);
  return std::unique_ptr<MappedFile>(new MappedFile(addr, size));
}

MappedFile::~MappedFile() {
  if (addr_ != nullptr) munmap(addr_, size_);
}

absl::Status MergeRuns(
    const std::vector<std::string_view>& runs,
    const std::function<absl::Status(std::string_view, std::vector<std::string_view>&)>& fn) {
  std::vector<RunReader> readers;
  readers.reserve(runs.size());
  for (std::string_view r : runs) readers.emplace_back(r);
  auto greater = [&](size_t a, size_t b) {
    int c = readers[a].key().compare(readers[b].key());
    return c != 0 ? c > 0 : a > b;
  };
  std::priority_queue<size_t, std::vector<size_t>, decltype(greater)> heap(greater);
  for (size_t i = 0; i < readers.size(); ++i) {
    auto more = readers[i].Next();
    if (!more.ok()) return more.status();
    if (*more) heap.push(i);
  }
  std::vector<std::string_view> values;
  std::vector<size_t> same;
  while (!heap.empty()) {
    size_t first = heap.top();
    heap.pop();
    std::string_view key = readers[first].key();
    values.clear();
    same.assign(1, first);
    while (!heap.empty() && readers[heap.top()].key() == key) {
      same.push_back(heap.top());
      heap.pop();
    }
    for (size_t i : same) {
      if (auto st = readers[i].Values(&values); !st.ok()) return st;
    }
    if (same.size() > 1) std::sort(values.begin(), values.end());
    // `key` points into a run that stays mapped; advancing readers only moves
    // their cursors.
    if (auto st = fn(key, values); !st.ok()) return st;
    for (size_t i : same) {
      auto more = readers[i].Next();
      if (!more.ok()) return more.status();
      if (*more) heap.push(i);
    }
  }
  return absl::OkStatus();
}

MapOutputBuffer::MapOutputBuffer(MapOutputOptions options) : options_(std::move(options)) {}

MapOutputBuffer::~MapOutputBuffer() {
  for (const auto& spill : spills_) {
    for (const std::string& path : spill) unlink(path.c_str());
  }
}

std::string_view MapOutputBuffer::StoreKey(std::string_view key) {
  if (key_blocks_.empty() || key_block_used_ + key.size() > key_block_size_) {
    key_block_size_ = std::max<size_t>(key.size(), 1 << 20);
    key_blocks_.push_back(std::make_unique<char[]>(key_block_size_));
    key_block_used_ = 0;
  }
  char* at = key_blocks_.back().get() + key_block_used_;
  if (!key.empty()) memcpy(at, key.data(), key.size());
  key_block_used_ += key.size();
  key_bytes_ += key.size();
  return {at, key.size()};
}

void MapOutputBuffer::Append(Entry& e, std::string_view value) {
  size_t before = e.values.capacity();
  if (value.size() < 0x80) {
    e.values.push_back(static_cast<char>(value.size()));
  } else {
    PutVarint(&e.values, value.size());
  }
  e.values.append(value);
  value_bytes_ += e.values.capacity() - before;
  ++e.count;
}

void MapOutputBuffer::GatherValues(const Entry& e, std::vector<std::string_view>* out) {
  out->clear();
  std::string_view data = e.values;
  size_t pos = 0;
  std::string_view v;
  while (pos < data.size() && GetBytes(data, &pos, &v)) out->push_back(v);
}

absl::Status MapOutputBuffer::CombineEntry(Entry& e) {
  GatherValues(e, &scratch_);
  combined_.clear();
  counters_.combine_records_in += static_cast<int64_t>(scratch_.size());
  absl::Status st =
      options_.combine_key(e.key, scratch_, [&](std::string_view v) { combined_.emplace_back(v); });
  if (!st.ok()) return st;
  counters_.combine_records_out += static_cast<int64_t>(combined_.size());
  // The buffer keeps its capacity: the next values of this key reuse it.
  e.values.clear();
  e.count = 0;
  for (const std::string& v : combined_) Append(e, v);
  e.combine_at = e.count + options_.combine_threshold;
  return absl::OkStatus();
}

uint64_t MapOutputBuffer::MemoryUsed() const {
  return key_bytes_ + value_bytes_ +
         entries_.size() * (sizeof(Entry) + 2 * sizeof(std::string_view));
}

void MapOutputBuffer::Add(std::string_view key, std::string_view value) {
  if (!error_.ok()) return;
  ++counters_.records_out;
  uint32_t idx;
  auto it = index_.find(key);
  if (it != index_.end()) {
    idx = it->second;
  } else {
    idx = static_cast<uint32_t>(entries_.size());
    std::string_view stored = StoreKey(key);
    entries_.push_back(Entry{.key = stored, .combine_at = options_.combine_threshold});
    index_.emplace(stored, idx);
  }
  Entry& e = entries_[idx];
  Append(e, value);
  if (options_.combine_key && e.count >= e.combine_at) {
    if (absl::Status st = CombineEntry(e); !st.ok()) {
      error_ = st;
      return;
    }
  }
  // Checked every 4096 records: the sum is cheap but not free.
  if ((counters_.records_out & 4095) == 0 && MemoryUsed() > options_.memory_budget_bytes) {
    error_ = Spill();
  }
}

void MapOutputBuffer::Clear() {
  index_.clear();
  entries_.clear();
  key_blocks_.clear();
  key_block_used_ = key_block_size_ = 0;
  key_bytes_ = 0;
  value_bytes_ = 0;
}

absl::Status MapOutputBuffer::WriteTable(const std::vector<std::string>& paths, bool final) {
  const int reduces = options_.reduces;
  std::vector<std::pair<uint32_t, uint32_t>> order;  // (partition, entry)
  order.reserve(entries_.size());
  for (uint32_t i = 0; i < entries_.size(); ++i) {
    order.emplace_back(KeyHash(entries_[i].key) % static_cast<uint32_t>(reduces), i);
  }
  std::sort(order.begin(), order.end(), [&](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first < b.first;
    return entries_[a.second].key < entries_[b.second].key;
  });
  size_t next = 0;
  for (int r = 0; r < reduces; ++r) {
    std::string tmp = absl::StrCat(paths[r], ".", options_.temp_prefix, "tmp");
    auto writer = RunWriter::Create(tmp);
    if (!writer.ok()) return writer.status();
    for (; next < order.size() && order[next].first == static_cast<uint32_t>(r); ++next) {
      Entry& e = entries_[order[next].second];
      if (options_.combine_key && e.count > 1) {
        if (auto st = CombineEntry(e); !st.ok()) return st;
      }
      GatherValues(e, &scratch_);
      if (scratch_.size() > 1) std::sort(scratch_.begin(), scratch_.end());
      (*writer)->WriteGroup(e.key, scratch_);
    }
    if (final) counters_.bytes_out += static_cast<int64_t>((*writer)->bytes());
    if (auto st = (*writer)->Close(); !st.ok()) {
      unlink(tmp.c_str());
      return st;
    }
    if (auto st = RenameIntoPlace(tmp, paths[r]); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status MapOutputBuffer::CombineBatch() {
  std::string in = absl::StrCat(options_.temp_dir, "/", options_.temp_prefix, "combine-in");
  std::string out = absl::StrCat(options_.temp_dir, "/", options_.temp_prefix, "combine-out");
  {
    std::vector<uint32_t> order(entries_.size());
    for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](uint32_t a, uint32_t b) { return entries_[a].key < entries_[b].key; });
    FILE* f = fopen(in.c_str(), "wb");
    if (f == nullptr) return absl::InternalError(ErrnoMessage("create " + in, errno));
    for (uint32_t i : order) {
      GatherValues(entries_[i], &scratch_);
      std::sort(scratch_.begin(), scratch_.end());
      counters_.combine_records_in += static_cast<int64_t>(scratch_.size());
      for (std::string_view v : scratch_) {
        fwrite(entries_[i].key.data(), 1, entries_[i].key.size(), f);
        fputc('\t', f);
        fwrite(v.data(), 1, v.size(), f);
        fputc('\n', f);
      }
    }
    if (fclose(f) != 0) return absl::DataLossError(ErrnoMessage("write " + in, errno));
  }
  absl::Status st = options_.combine_batch(in, out);
  unlink(in.c_str());
  if (st.ok()) {
    Clear();
    // The command's output replaces the table. Its lines are not combined
    // again (a batch combiner runs once per table).
    CombineBatchFn batch = std::move(options_.combine_batch);
    options_.combine_batch = nullptr;
    uint64_t records = 0;
    st = ForEachKeyValueLine(
        out,
        [&](std::string_view k, std::string_view v) {
          auto it = index_.find(k);
          uint32_t idx;
          if (it != index_.end()) {
            idx = it->second;
          } else {
            idx = static_cast<uint32_t>(entries_.size());
            Entry e;
            e.key = StoreKey(k);
            entries_.push_back(e);
            index_.emplace(e.key, idx);
          }
          Append(entries_[idx], v);
        },
        &records);
    options_.combine_batch = std::move(batch);
    counters_.combine_records_out += static_cast<int64_t>(records);
  }
  unlink(out.c_str());
  return st;
}

absl::Status MapOutputBuffer::Spill() {
  if (options_.combine_batch) {
    if (auto st = CombineBatch(); !st.ok()) return st;
  }
  std::vector<std::string> paths;
  for (int r = 0; r < options_.reduces; ++r) {
    paths.push_back(absl::StrCat(options_.temp_dir, "/", options_.temp_prefix, "spill-",
                                 spills_.size(), "-", r));
  }
  spills_.push_back(paths);
  ++counters_.spilled_runs;
  absl::Status st = WriteTable(paths, /*final=*/false);
  Clear();
  return st;
}

absl::Status MapOutputBuffer::Finish(const std::vector<std::string>& paths) {
  if (!error_.ok()) return error_;
  if (spills_.empty()) {
    if (options_.combine_batch && !entries_.empty()) {
      if (auto st = CombineBatch(); !st.ok()) return st;
    }
    return WriteTable(paths, /*final=*/true);
  }
  if (!entries_.empty()) {
    if (auto st = Spill(); !st.ok()) return st;
  }
  // Merge each partition's spilled runs, combining equal keys across runs.
  std::vector<std::string> combined;
  for (int r = 0; r < options_.reduces; ++r) {
    std::vector<std::unique_ptr<MappedFile>> files;
    std::vector<std::string_view> runs;
    for (const auto& spill : spills_) {
      auto f = MappedFile::Open(spill[r]);
      if (!f.ok()) return f.status();
      runs.push_back((*f)->data());
      files.push_back(std::move(*f));
    }
    std::string tmp = absl::StrCat(paths[r], ".", options_.temp_prefix, "tmp");
    auto writer = RunWriter::Create(tmp);
    if (!writer.ok()) return writer.status();
    absl::Status st =
        MergeRuns(runs, [&](std::string_view key, std::vector<std::string_view>& values) {
          if (options_.combine_key && values.size() > 1) {
            combined.clear();
            counters_.combine_records_in += static_cast<int64_t>(values.size());
            absl::Status c = options_.combine_key(
                key, values, [&](std::string_view v) { combined.emplace_back(v); });
            if (!c.ok()) return c;
            counters_.combine_records_out += static_cast<int64_t>(combined.size());
            values.assign(combined.begin(), combined.end());
            std::sort(values.begin(), values.end());
          }
          (*writer)->WriteGroup(key, values);
          return absl::OkStatus();
        });
    counters_.bytes_out += static_cast<int64_t>((*writer)->bytes());
    absl::Status c = (*writer)->Close();
    if (st.ok()) st = c;
    if (st.ok()) st = RenameIntoPlace(tmp, paths[r]);
    if (!st.ok()) {
      unlink(tmp.c_str());
      return st;
    }
  }
  for (const auto& spill : spills_) {
    for (const std::string& path : spill) unlink(path.c_str());
  }
  spills_.clear();
  return absl::OkStatus();
}

}  // namespace ds::mr
