// How mrrun shows jobs: the live progress line, `mrrun status` and `mrrun list`.
// Pure functions of a JobStatus and the current time, so the rendering does
// not depend on a coordinator being up.
#pragma once

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "proto/mapreduce.pb.h"

namespace ds::mr {

// "job-3" for "job-3" and for "3".
std::string NormalizeJobId(const std::string& arg);

// QUEUED, MAPPING, ... as users read them ("queued", "mapping", ...).
std::string StateName(pb::JobState state);
bool IsTerminal(pb::JobState state);

// Wall time the job has run: finish (or now, while it runs) minus start (or
// submission, while it is queued).
absl::Duration Elapsed(const pb::JobStatus& job, absl::Time now);

// "2.4s", "0.0s": always with a unit, one decimal.
std::string FormatSeconds(absl::Duration d);

// "job-3 mapping: maps 3/8, reduces 0/10, 2.4s"
std::string ProgressLine(const pb::JobStatus& job, absl::Time now);

// The multi-line `mrrun status` report: spec, state, error, progress, times,
// attempts and every counter.
std::string StatusReport(const pb::JobStatus& job, absl::Time now);

// `mrrun list`: a header and one row per job.
std::string ListTable(const std::vector<pb::JobStatus>& jobs, absl::Time now);

}  // namespace ds::mr
