#include "client/mrrun_format.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ds::mr {
namespace {

std::string WhenUtc(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixMillis(unix_ms),
                          absl::UTCTimeZone());
}

std::string AppOf(const pb::JobSpec& spec) {
  if (!spec.app().empty()) return spec.app();
  return absl::StrCat(
      "streaming (mapper '", spec.mapper(), "', reducer '", spec.reducer(), "'",
      spec.combiner().empty() ? "" : absl::StrCat(", combiner '", spec.combiner(), "'"), ")");
}

}  // namespace

std::string FormatSeconds(absl::Duration d) {
  return absl::StrFormat("%.1fs", absl::ToDoubleSeconds(d));
}

std::string NormalizeJobId(const std::string& arg) {
  if (!arg.empty() && std::all_of(arg.begin(), arg.end(), [](char c) {
        return absl::ascii_isdigit(static_cast<unsigned char>(c));
      })) {
    return "job-" + arg;
  }
  return arg;
}

std::string StateName(pb::JobState state) {
  switch (state) {
    case pb::QUEUED:
      return "queued";
    case pb::MAPPING:
      return "mapping";
    case pb::REDUCING:
      return "reducing";
    case pb::SUCCEEDED:
      return "succeeded";
    case pb::FAILED:
      return "failed";
    case pb::CANCELLED:
      return "cancelled";
    default:
      return "unknown";
  }
}

bool IsTerminal(pb::JobState state) {
  return state == pb::SUCCEEDED || state == pb::FAILED || state == pb::CANCELLED;
}

absl::Duration Elapsed(const pb::JobStatus& job, absl::Time now) {
  int64_t from = job.start_unix_ms() != 0 ? job.start_unix_ms() : job.submit_unix_ms();
  absl::Time end = job.finish_unix_ms() != 0 ? absl::FromUnixMillis(job.finish_unix_ms()) : now;
  return std::max(absl::ZeroDuration(), end - absl::FromUnixMillis(from));
}

std::string ProgressLine(const pb::JobStatus& job, absl::Time now) {
  return absl::StrCat(job.job_id(), " ", StateName(job.state()), ": maps ", job.maps_done(), "/",
                      job.maps_total(), ", reduces ", job.reduces_done(), "/", job.reduces_total(),
                      ", ", FormatSeconds(Elapsed(job, now)));
}

std::string StatusReport(const pb::JobStatus& job, absl::Time now) {
  const pb::JobSpec& spec = job.spec();
  std::string out = absl::StrCat(job.job_id(), ": ", StateName(job.state()), "\n");
  if (!job.error().empty()) absl::StrAppend(&out, "  error:     ", job.error(), "\n");
  absl::StrAppend(&out, "  app:       ", AppOf(spec), "\n");
  absl::StrAppend(&out, "  inputs:    ", spec.inputs_size(), " file(s)");
  if (spec.splits_size() > 0) absl::StrAppend(&out, " in ", spec.splits_size(), " splits");
  if (spec.inputs_size() > 0) absl::StrAppend(&out, ", first ", spec.inputs(0));
  absl::StrAppend(&out, "\n  output:    ", spec.output_dir(), "/mr-out-0..",
                  std::max(0, spec.reduces() - 1), "\n");
  absl::StrAppend(&out, "  progress:  maps ", job.maps_done(), "/", job.maps_total(), ", reduces ",
                  job.reduces_done(), "/", job.reduces_total(), "\n");
  absl::StrAppend(&out, "  attempts:  ", job.attempts(), " started, ", job.failed_attempts(),
                  " failed or timed out, ", job.backup_attempts(), " backup");
  if (job.lost_map_outputs() > 0) {
    absl::StrAppend(&out, ", ", job.lost_map_outputs(), " map(s) re-run (output lost)");
  }
  absl::StrAppend(&out, "\n");
  absl::StrAppend(&out, "  submitted: ", WhenUtc(job.submit_unix_ms()), "\n");
  if (job.finish_unix_ms() != 0) {
    absl::StrAppend(&out, "  finished:  ", WhenUtc(job.finish_unix_ms()), "\n");
  }
  absl::StrAppend(&out, "  elapsed:   ", FormatSeconds(Elapsed(job, now)), "\n");
  if (!job.counters().empty()) {
    absl::StrAppend(&out, "  counters:\n");
    // Sorted, so the report reads the same every time (a proto map is not).
    std::vector<std::pair<std::string, int64_t>> counters(job.counters().begin(),
                                                          job.counters().end());
    std::sort(counters.begin(), counters.end());
    size_t width = 0;
    for (const auto& [name, value] : counters) width = std::max(width, name.size());
    for (const auto& [name, value] : counters) {
      absl::StrAppend(&out, "    ", name, std::string(width - name.size() + 2, ' '), value, "\n");
    }
  }
  return out;
}

std::string ListTable(const std::vector<pb::JobStatus>& jobs, absl::Time now) {
  std::string out = absl::StrFormat("%-10s %-10s %-7s %-9s %-9s %s\n", "JOB", "STATE", "MAPS",
                                    "REDUCES", "ELAPSED", "APP");
  for (const pb::JobStatus& job : jobs) {
    absl::StrAppend(
        &out,
        absl::StrFormat("%-10s %-10s %-7s %-9s %-9s %s\n", job.job_id(), StateName(job.state()),
                        absl::StrCat(job.maps_done(), "/", job.maps_total()),
                        absl::StrCat(job.reduces_done(), "/", job.reduces_total()),
                        FormatSeconds(Elapsed(job, now)), AppOf(job.spec())));
  }
  return out;
}

}  // namespace ds::mr
