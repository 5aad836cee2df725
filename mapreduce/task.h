// Executing one map or reduce task: the file layout and atomic-rename rules
// shared by every worker.
//
// Map task M of a job writes R intermediate files <location>/mr-int-M-<r>,
// where <location> is <work root>/<job id> and the work root is the worker's
// --work_dir or, by default, <output dir>/.mr-intermediate. Reduce task r reads
// mr-int-<m>-r from every map's location and writes <output dir>/mr-out-r. Every
// file is written under a temporary name ("tmp-...", never "mr-out*") and
// renamed into place, so a crashed attempt leaves no partial file behind.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "mapreduce/runner.h"
#include "proto/mapreduce.pb.h"

namespace ds::mr {

struct TaskResult {
  std::string output_location;  // map tasks
  Counters counters;
};

// The work root for a task when the worker has no --work_dir.
std::string WorkRoot(const pb::Task& task, const std::string& work_dir);

absl::StatusOr<TaskResult> RunMapTask(const pb::Task& task, AppRunner& runner,
                                      const std::string& work_dir);
absl::StatusOr<TaskResult> RunReduceTask(const pb::Task& task, AppRunner& runner,
                                         const std::string& work_dir, uint64_t sort_memory_bytes);

}  // namespace ds::mr
