#include "mapreduce/task.h"

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "mapreduce/records.h"

namespace ds::mr {
namespace {

absl::Status MakeDirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("create ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status Rename(const std::string& from, const std::string& to) {
  if (rename(from.c_str(), to.c_str()) != 0) {
    return absl::FailedPreconditionError(ErrnoMessage("rename " + from + " to " + to, errno));
  }
  return absl::OkStatus();
}

}  // namespace

std::string WorkRoot(const pb::Task& task, const std::string& work_dir) {
  return work_dir.empty() ? task.spec().output_dir() + "/.mr-intermediate" : work_dir;
}

absl::StatusOr<TaskResult> RunMapTask(const pb::Task& task, AppRunner& runner,
                                      const std::string& work_dir) {
  TaskResult result;
  result.output_location = WorkRoot(task, work_dir) + "/" + task.job_id();
  if (auto st = MakeDirs(result.output_location); !st.ok()) return st;
  const int reduces = task.spec().reduces();
  const int m = task.index();
  std::vector<std::string> tmp(reduces), final(reduces);
  std::vector<std::unique_ptr<RecordWriter>> writers;
  for (int r = 0; r < reduces; ++r) {
    tmp[r] = absl::StrCat(result.output_location, "/tmp-map-", m, "-", r, "-", task.attempt_id());
    final[r] = absl::StrCat(result.output_location, "/mr-int-", m, "-", r);
    auto w = RecordWriter::Create(tmp[r]);
    if (!w.ok()) return w.status();
    writers.push_back(std::move(*w));
  }
  auto cleanup = [&] {
    for (const std::string& t : tmp) unlink(t.c_str());
  };
  int64_t records_out = 0;
  uint64_t bytes_in = 0;
  MapInput input;
  if (task.spec().splits_size() > 0) {
    const pb::InputSplit& split = task.spec().splits(m);
    input = {split.path(), static_cast<uint64_t>(split.offset()),
             static_cast<uint64_t>(split.length())};
  } else {
    input.path = task.spec().inputs(m);
  }
  absl::Status st = runner.Map(
      input,
      [&](std::string_view key, std::string_view value) {
        writers[KeyHash(key) % reduces]->Write(key, value);
        ++records_out;
      },
      &result.counters, &bytes_in);
  int64_t bytes_out = 0;
  for (auto& w : writers) {
    bytes_out += static_cast<int64_t>(w->bytes());
    if (absl::Status c = w->Close(); st.ok()) st = c;
  }
  for (int r = 0; r < reduces && st.ok(); ++r) st = Rename(tmp[r], final[r]);
  if (!st.ok()) {
    cleanup();
    return st;
  }
  result.counters["map.records_in"] += 1;
  result.counters["map.bytes_in"] += static_cast<int64_t>(bytes_in);
  result.counters["map.records_out"] += records_out;
  result.counters["map.bytes_out"] += bytes_out;
  return result;
}

absl::StatusOr<TaskResult> RunReduceTask(const pb::Task& task, AppRunner& runner,
                                         const std::string& work_dir, uint64_t sort_memory_bytes) {
  TaskResult result;
  const int r = task.index();
  const std::string& out_dir = task.spec().output_dir();
  if (auto st = MakeDirs(out_dir); !st.ok()) return st;
  std::string spill_dir = WorkRoot(task, work_dir) + "/" + task.job_id();
  if (auto st = MakeDirs(spill_dir); !st.ok()) return st;

  ExternalSorter sorter(spill_dir, sort_memory_bytes);
  int64_t records_in = 0, bytes_in = 0;
  std::string key, value;
  for (int m = 0; m < task.map_locations_size(); ++m) {
    auto reader = RecordReader::Open(absl::StrCat(task.map_locations(m), "/mr-int-", m, "-", r));
    if (!reader.ok()) return reader.status();
    while (true) {
      auto more = (*reader)->Next(&key, &value);
      if (!more.ok()) return more.status();
      if (!*more) break;
      ++records_in;
      bytes_in += static_cast<int64_t>(key.size() + value.size());
      if (auto st = sorter.Add(key, value); !st.ok()) return st;
    }
  }

  std::string tmp = absl::StrCat(out_dir, "/tmp-reduce-", r, "-", task.attempt_id());
  std::string final = absl::StrCat(out_dir, "/mr-out-", r);
  FILE* f = fopen(tmp.c_str(), "wb");
  if (f == nullptr) return absl::FailedPreconditionError(ErrnoMessage("create " + tmp, errno));
  setvbuf(f, nullptr, _IOFBF, 1 << 20);
  int64_t records_out = 0, bytes_out = 0;
  absl::Status st = runner.Reduce(
      [&](const EmitFn& fn) {
        return sorter.ForEach([&](std::string_view k, std::string_view v) {
          fn(k, v);
          return absl::OkStatus();
        });
      },
      [&](std::string_view k, std::string_view v) {
        // "key value\n", exactly what 6.824's mrsequential writes.
        fwrite(k.data(), 1, k.size(), f);
        fputc(' ', f);
        fwrite(v.data(), 1, v.size(), f);
        fputc('\n', f);
        ++records_out;
        bytes_out += static_cast<int64_t>(k.size() + v.size() + 2);
      },
      &result.counters);
  bool write_failed = ferror(f) != 0;
  write_failed |= fclose(f) != 0;
  if (st.ok() && write_failed) st = absl::DataLossError(ErrnoMessage("write " + tmp, errno));
  if (st.ok()) st = Rename(tmp, final);
  if (!st.ok()) {
    unlink(tmp.c_str());
    return st;
  }
  result.counters["reduce.records_in"] += records_in;
  result.counters["reduce.bytes_in"] += bytes_in;
  result.counters["reduce.records_out"] += records_out;
  result.counters["reduce.bytes_out"] += bytes_out;
  result.counters["reduce.spilled_runs"] += sorter.spilled_runs();
  return result;
}

}  // namespace ds::mr
