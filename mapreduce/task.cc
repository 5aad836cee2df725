#include "mapreduce/task.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "mapreduce/records.h"
#include "mapreduce/shuffle.h"

namespace ds::mr {
namespace {

absl::Status MakeDirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("create ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

std::string RunName(int m, int r) { return absl::StrCat("mr-int-", m, "-", r); }

}  // namespace

std::string JobWorkDir(const std::string& work_dir, const std::string& job_id) {
  return work_dir + "/" + job_id;
}

absl::StatusOr<TaskResult> RunMapTask(const pb::Task& task, AppRunner& runner,
                                      const TaskOptions& options) {
  TaskResult result;
  result.output_location = JobWorkDir(options.work_dir, task.job_id());
  if (auto st = MakeDirs(result.output_location); !st.ok()) return st;
  const int reduces = task.spec().reduces();
  const int m = task.index();
  std::vector<std::string> paths;
  for (int r = 0; r < reduces; ++r) paths.push_back(result.output_location + "/" + RunName(m, r));

  MapOutputOptions buffer_options;
  buffer_options.reduces = reduces;
  buffer_options.temp_dir = result.output_location;
  buffer_options.temp_prefix = absl::StrCat("tmp-map-", m, "-", task.attempt_id(), "-");
  buffer_options.memory_budget_bytes = options.memory_budget_bytes;
  if (!task.spec().combine_disabled()) {
    buffer_options.combine_key = runner.KeyCombiner(&result.counters);
    buffer_options.combine_batch = runner.BatchCombiner();
  }
  MapOutputBuffer buffer(std::move(buffer_options));

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
      input, [&](std::string_view key, std::string_view value) { buffer.Add(key, value); },
      &result.counters, &bytes_in);
  if (st.ok()) st = buffer.Finish(paths);
  if (!st.ok()) return st;
  const MapOutputCounters& c = buffer.counters();
  result.counters["map.records_in"] += 1;
  result.counters["map.bytes_in"] += static_cast<int64_t>(bytes_in);
  result.counters["map.records_out"] += c.records_out;
  result.counters["map.bytes_out"] += c.bytes_out;
  result.counters["map.spilled_runs"] += c.spilled_runs;
  if (c.combine_records_in > 0) {
    result.counters["combine.records_in"] += c.combine_records_in;
    result.counters["combine.records_out"] += c.combine_records_out;
  }
  return result;
}

absl::StatusOr<TaskResult> RunReduceTask(const pb::Task& task, AppRunner& runner,
                                         const TaskOptions& options, std::vector<LostMap>* lost) {
  TaskResult result;
  const int r = task.index();
  const std::string& out_dir = task.spec().output_dir();
  if (auto st = MakeDirs(out_dir); !st.ok()) return st;
  const std::string job_dir = JobWorkDir(options.work_dir, task.job_id());
  if (auto st = MakeDirs(job_dir); !st.ok()) return st;

  // One run per map: mapped from this worker's disk (maps it ran, and runs
  // fetched beyond the memory budget), or held in memory as fetched.
  std::vector<std::unique_ptr<MappedFile>> mapped;
  std::vector<std::string> fetched;
  std::vector<std::string> spilled;  // removed at the end
  std::vector<std::string_view> runs;
  fetched.reserve(task.map_locations_size());
  uint64_t in_memory = 0;
  int64_t bytes_fetched = 0, spilled_runs = 0;
  static std::atomic<uint64_t> spill_counter{0};
  auto cleanup = [&] {
    mapped.clear();
    for (const std::string& p : spilled) unlink(p.c_str());
  };
  std::string last_error;
  for (int m = 0; m < task.map_locations_size(); ++m) {
    const std::string address = m < task.map_addresses_size() ? task.map_addresses(m) : "";
    if (address.empty() || address == options.self_address || !options.fetch) {
      auto f = MappedFile::Open(task.map_locations(m) + "/" + RunName(m, r));
      if (!f.ok()) {
        lost->push_back({m, address});
        last_error = std::string(f.status().message());
        continue;
      }
      mapped.push_back(std::move(*f));
      continue;
    }
    pb::FetchPartitionRequest request;
    request.set_job_id(task.job_id());
    request.set_map_index(m);
    request.set_reduce_index(r);
    absl::StatusOr<std::string> got = options.fetch(address, request);
    if (!got.ok()) {
      lost->push_back({m, address});
      last_error =
          absl::StrCat("fetch map ", m, " output from ", address, ": ", got.status().message());
      continue;
    }
    std::string data = std::move(*got);
    bytes_fetched += static_cast<int64_t>(data.size());
    if (in_memory + data.size() > options.memory_budget_bytes) {
      // Beyond the budget the run goes to the work dir and is mapped back.
      std::string path =
          absl::StrCat(job_dir, "/tmp-fetch-", r, "-", task.attempt_id(), "-", spill_counter++);
      spilled.push_back(path);
      absl::Status w = WriteFileAtomically(path, data);
      if (w.ok()) {
        auto f = MappedFile::Open(path);
        if (f.ok()) {
          mapped.push_back(std::move(*f));
        } else {
          w = f.status();
        }
      }
      if (!w.ok()) {
        cleanup();
        return w;
      }
      ++spilled_runs;
    } else {
      in_memory += data.size();
      fetched.push_back(std::move(data));
    }
  }
  if (!lost->empty()) {
    cleanup();
    return absl::UnavailableError(absl::StrCat(
        "the output of ", lost->size(), " map task(s) could not be read; first: ", last_error));
  }
  int64_t bytes_in = 0;
  for (const auto& f : mapped) runs.push_back(f->data());
  for (const std::string& d : fetched) runs.push_back(d);
  for (std::string_view run : runs) bytes_in += static_cast<int64_t>(run.size());

  std::string tmp = absl::StrCat(out_dir, "/tmp-reduce-", r, "-", task.attempt_id());
  std::string final = absl::StrCat(out_dir, "/mr-out-", r);
  FILE* f = fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    cleanup();
    return absl::FailedPreconditionError(ErrnoMessage("create " + tmp, errno));
  }
  setvbuf(f, nullptr, _IOFBF, 1 << 20);
  int64_t records_in = 0, records_out = 0, bytes_out = 0;
  absl::Status st = runner.Reduce(
      [&](const EmitFn& fn) {
        return MergeRuns(runs, [&](std::string_view k, std::vector<std::string_view>& values) {
          records_in += static_cast<int64_t>(values.size());
          for (std::string_view v : values) fn(k, v);
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
  cleanup();
  if (st.ok()) st = RenameIntoPlace(tmp, final);
  if (!st.ok()) {
    unlink(tmp.c_str());
    return st;
  }
  result.counters["reduce.records_in"] += records_in;
  result.counters["reduce.bytes_in"] += bytes_in;
  result.counters["reduce.bytes_remote"] += bytes_fetched;
  result.counters["reduce.records_out"] += records_out;
  result.counters["reduce.bytes_out"] += bytes_out;
  result.counters["reduce.spilled_runs"] += spilled_runs;
  return result;
}

}  // namespace ds::mr
