// What the metrics tests need to read a daemon's /metrics the way Prometheus
// does: a plain HTTP GET over a socket, a parser of the text exposition
// format (version 0.0.4: "# HELP", "# TYPE", and `name{label="v",...} value`
// lines), and the bound port a daemon started with --metrics-listen=HOST:0
// reports in its log.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace ds::testing {

// One sample line.
struct MetricSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// A parsed scrape.
class MetricsText {
 public:
  // kInvalidArgument naming the line for anything that is not the text
  // format: a malformed sample or comment, a sample of a family whose TYPE
  // came later, a TYPE given twice.
  static absl::StatusOr<MetricsText> Parse(absl::string_view text);

  const std::vector<MetricSample>& samples() const { return samples_; }
  // "counter", "gauge", "histogram", ...; "" if no TYPE line names `family`.
  std::string Type(const std::string& family) const;
  bool HasHelp(const std::string& family) const { return help_.contains(family); }
  // Whether any sample is called `name`.
  bool Has(const std::string& name) const;
  // The samples called `name` whose labels include every pair of `labels`.
  std::vector<MetricSample> Find(const std::string& name,
                                 const std::map<std::string, std::string>& labels = {}) const;
  // The sum of Find(name, labels)'s values (0 if none).
  double Sum(const std::string& name, const std::map<std::string, std::string>& labels = {}) const;

 private:
  std::vector<MetricSample> samples_;
  std::map<std::string, std::string> types_;
  std::map<std::string, std::string> help_;
};

// GET http://`address`/`path` (address "HOST:PORT", IPv4) with HTTP/1.0 and
// "Connection: close". The body of a 200 answer; kUnavailable if the
// connection fails, kInternal for another status, kDeadlineExceeded after
// `timeout`.
absl::StatusOr<std::string> HttpGet(const std::string& address, const std::string& path,
                                    absl::Duration timeout = absl::Seconds(5));

// GET /metrics and parse it.
absl::StatusOr<MetricsText> Scrape(const std::string& address);

// The address a daemon logged as "metrics on http://HOST:PORT/metrics" in
// the log file `log_path`, waiting up to `timeout` for the line.
absl::StatusOr<std::string> MetricsAddressFromLog(const std::string& log_path,
                                                  absl::Duration timeout = absl::Seconds(30));

}  // namespace ds::testing
