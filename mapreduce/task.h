// Executing one map or reduce task: the file layout and atomic-rename rules
// shared by every worker.
//
// Map task M of a job writes R runs <location>/mr-int-M-<r> (format in
// mapreduce/shuffle.h), where <location> is <work dir>/<job id> on the worker
// that ran it: nothing is shared between workers but inputs and outputs.
// Reduce task r fetches mr-int-<m>-r from every map's worker (over gRPC, or
// from its own disk when it ran the map itself), merges them and writes
// <output dir>/mr-out-r. Every file is written under a temporary name
// ("tmp-..." or "*.tmp", never "mr-out*") and renamed into place, so a crashed
// attempt leaves no partial file behind.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "mapreduce/runner.h"
#include "proto/mapreduce.pb.h"

namespace ds::mr {

struct TaskResult {
  std::string output_location;  // map tasks
  Counters counters;
};

struct TaskOptions {
  // The worker's work directory (intermediate files, spills, temporary
  // files). Must not be empty.
  std::string work_dir;
  // Memory a map task's output buffer, or a reduce task's fetched runs, may
  // use before spilling to the work dir. Unit: bytes. Default: 256 MiB.
  uint64_t memory_budget_bytes = 256ull << 20;
  // This worker's map-output address: runs of maps it ran itself are read
  // from its disk rather than fetched.
  std::string self_address;
  // Fetches partition `request.reduce_index()` of map `request.map_index()`
  // from the worker at `address`. A failure means the output is lost (after
  // the fetcher's own retries). Null: every run is read from the local disk.
  std::function<absl::StatusOr<std::string>(const std::string& address,
                                            const pb::FetchPartitionRequest& request)>
      fetch;
};

// A map output a reduce task could not get, and where it looked.
struct LostMap {
  int index;
  std::string address;
};

// <work dir>/<job id>: a job's intermediate files on this worker.
std::string JobWorkDir(const std::string& work_dir, const std::string& job_id);

absl::StatusOr<TaskResult> RunMapTask(const pb::Task& task, AppRunner& runner,
                                      const TaskOptions& options);
// On a failure to fetch map outputs, returns an error and fills *lost.
absl::StatusOr<TaskResult> RunReduceTask(const pb::Task& task, AppRunner& runner,
                                         const TaskOptions& options, std::vector<LostMap>* lost);

}  // namespace ds::mr
