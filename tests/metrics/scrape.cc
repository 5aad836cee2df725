#include "tests/metrics/scrape.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/files.h"

namespace ds::testing {
namespace {

bool NameStart(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':';
}
bool NameChar(char c) { return NameStart(c) || std::isdigit(static_cast<unsigned char>(c)); }

// Reads a metric or label name at the front of `s`; "" if there is none.
std::string TakeName(absl::string_view& s, bool colons) {
  size_t n = 0;
  while (n < s.size() && (n == 0 ? NameStart(s[n]) : NameChar(s[n])) && (colons || s[n] != ':')) {
    ++n;
  }
  std::string name(s.substr(0, n));
  s.remove_prefix(n);
  return name;
}

// `{a="x",b="y"}` at the front of `s` (the brace already taken).
bool TakeLabels(absl::string_view& s, std::map<std::string, std::string>* labels) {
  while (true) {
    if (!s.empty() && s.front() == '}') {
      s.remove_prefix(1);
      return true;
    }
    std::string name = TakeName(s, /*colons=*/false);
    if (name.empty() || s.size() < 2 || s[0] != '=' || s[1] != '"') return false;
    s.remove_prefix(2);
    std::string value;
    while (true) {
      if (s.empty()) return false;
      char c = s.front();
      s.remove_prefix(1);
      if (c == '"') break;
      if (c == '\\') {
        if (s.empty()) return false;
        char e = s.front();
        s.remove_prefix(1);
        if (e == 'n') {
          value.push_back('\n');
        } else if (e == '\\' || e == '"') {
          value.push_back(e);
        } else {
          return false;
        }
      } else {
        value.push_back(c);
      }
    }
    if (!labels->emplace(std::move(name), std::move(value)).second) return false;  // repeated
    if (!s.empty() && s.front() == ',') s.remove_prefix(1);
  }
}

// A sample value: a float, NaN, +Inf or -Inf (any case, as strtod reads them).
bool ParseValue(absl::string_view token, double* out) {
  if (token.empty()) return false;
  std::string copy(token);
  char* end = nullptr;
  errno = 0;
  *out = std::strtod(copy.c_str(), &end);
  return end == copy.c_str() + copy.size();
}

// The family a sample belongs to: histograms and summaries add suffixes.
std::vector<std::string> FamiliesOf(const std::string& name) {
  std::vector<std::string> out = {name};
  for (const char* suffix : {"_bucket", "_sum", "_count", "_total"}) {
    if (absl::EndsWith(name, suffix)) out.push_back(name.substr(0, name.size() - strlen(suffix)));
  }
  return out;
}

}  // namespace

absl::StatusOr<MetricsText> MetricsText::Parse(absl::string_view text) {
  MetricsText m;
  std::set<std::string> sampled;  // families with samples so far
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": ", why, ": \"", line, "\""));
    };
    absl::string_view s = absl::StripTrailingAsciiWhitespace(line);
    if (s.empty()) continue;
    if (s.front() == '#') {
      std::vector<absl::string_view> parts = absl::StrSplit(s, absl::MaxSplits(' ', 3));
      if (parts.size() < 3 || (parts[1] != "HELP" && parts[1] != "TYPE")) continue;  // comment
      std::string family(parts[2]);
      absl::string_view rest = parts.size() > 3 ? parts[3] : "";
      if (parts[1] == "TYPE") {
        static const std::set<absl::string_view> kTypes = {"counter", "gauge", "histogram",
                                                           "summary", "untyped"};
        if (!kTypes.contains(rest)) return bad("unknown type");
        if (m.types_.contains(family)) return bad("second TYPE line");
        if (sampled.contains(family)) return bad("TYPE after the family's samples");
        m.types_[family] = std::string(rest);
      } else {
        m.help_[family] = std::string(rest);
      }
      continue;
    }
    MetricSample sample;
    sample.name = TakeName(s, /*colons=*/true);
    if (sample.name.empty()) return bad("no metric name");
    if (!s.empty() && s.front() == '{') {
      s.remove_prefix(1);
      if (!TakeLabels(s, &sample.labels)) return bad("malformed labels");
    }
    if (s.empty() || s.front() != ' ') return bad("no value");
    std::vector<absl::string_view> tokens = absl::StrSplit(s, ' ', absl::SkipEmpty());
    if (tokens.empty() || tokens.size() > 2 || !ParseValue(tokens[0], &sample.value)) {
      return bad("malformed value");
    }
    int64_t timestamp;
    if (tokens.size() == 2 && !absl::SimpleAtoi(tokens[1], &timestamp)) {
      return bad("malformed timestamp");
    }
    for (const std::string& f : FamiliesOf(sample.name)) sampled.insert(f);
    m.samples_.push_back(std::move(sample));
  }
  return m;
}

std::string MetricsText::Type(const std::string& family) const {
  auto it = types_.find(family);
  return it == types_.end() ? "" : it->second;
}

bool MetricsText::Has(const std::string& name) const { return !Find(name).empty(); }

std::vector<MetricSample> MetricsText::Find(
    const std::string& name, const std::map<std::string, std::string>& labels) const {
  std::vector<MetricSample> out;
  for (const MetricSample& s : samples_) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      if (it == s.labels.end() || it->second != v) match = false;
    }
    if (match) out.push_back(s);
  }
  return out;
}

double MetricsText::Sum(const std::string& name,
                        const std::map<std::string, std::string>& labels) const {
  double sum = 0;
  for (const MetricSample& s : Find(name, labels)) sum += s.value;
  return sum;
}

absl::StatusOr<std::string> HttpGet(const std::string& address, const std::string& path,
                                    absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("not HOST:PORT: ", address));
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 address: ", address));
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    return absl::UnavailableError(absl::StrCat("connect ", address, ": ", strerror(errno)));
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", address, "\r\nConnection: close\r\n\r\n");
  for (size_t sent = 0; sent < request.size();) {
    ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return absl::UnavailableError(absl::StrCat("send: ", strerror(errno)));
    sent += static_cast<size_t>(n);
  }
  std::string response;
  char buf[16384];
  while (true) {
    const int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (ms <= 0) return absl::DeadlineExceededError(absl::StrCat("GET ", address, path));
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, ms) == 0) continue;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::UnavailableError(absl::StrCat("recv: ", strerror(errno)));
    if (n == 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  const size_t header_end = response.find("\r\n\r\n");
  if (header_end == std::string::npos) {
    return absl::InternalError(absl::StrCat("no HTTP header in: ", response.substr(0, 200)));
  }
  absl::string_view status_line = absl::string_view(response).substr(0, response.find("\r\n"));
  std::vector<absl::string_view> parts = absl::StrSplit(status_line, ' ');
  if (parts.size() < 2 || parts[1] != "200") {
    return absl::InternalError(absl::StrCat("GET ", address, path, ": ", status_line));
  }
  return response.substr(header_end + 4);
}

absl::StatusOr<MetricsText> Scrape(const std::string& address) {
  absl::StatusOr<std::string> body = HttpGet(address, "/metrics");
  if (!body.ok()) return body.status();
  return MetricsText::Parse(*body);
}

absl::StatusOr<std::string> MetricsAddressFromLog(const std::string& log_path,
                                                  absl::Duration timeout) {
  const std::string prefix = "metrics on http://";
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    std::string log = common::ReadWholeFile(log_path).value_or("");
    if (size_t at = log.find(prefix); at != std::string::npos) {
      at += prefix.size();
      const size_t end = log.find("/metrics", at);
      if (end != std::string::npos) return log.substr(at, end - at);
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("no \"", prefix, "...\" line in ", log_path,
                                                      " after ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

}  // namespace ds::testing
