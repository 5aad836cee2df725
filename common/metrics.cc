#include "common/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <exception>
#include <thread>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"

ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT to serve Prometheus metrics on (http://HOST:PORT/metrics); port 0 picks a "
          "free port, reported in the log. Default: \"\", no metrics endpoint.");

namespace ds::common {

std::string MetricsListenFlag() { return absl::GetFlag(FLAGS_metrics_listen); }

const prometheus::Histogram::BucketBoundaries& LatencyBucketsSeconds() {
  static const auto* const kBuckets = new prometheus::Histogram::BucketBoundaries{
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
      0.025,   0.05,   0.1,     0.25,   0.5,   1,      2.5,   10};
  return *kBuckets;
}

void ScrapeWriter::Begin(std::string name, std::string help, prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  families_.push_back(std::move(f));
}

void ScrapeWriter::Sample(double value, prometheus::Labels labels) {
  if (families_.empty()) return;
  prometheus::MetricFamily& f = families_.back();
  prometheus::ClientMetric m;
  for (auto& [name, label_value] : labels) m.label.push_back({name, std::move(label_value)});
  if (f.type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(std::move(m));
}

std::vector<prometheus::MetricFamily> ScrapeCollectable::Collect() const {
  ScrapeWriter writer;
  fn_(writer);
  return writer.Take();
}

MetricsServer::MetricsServer(std::unique_ptr<prometheus::Exposer> exposer, std::string host,
                             int port)
    : exposer_(std::move(exposer)), host_(std::move(host)), port_(port) {}

namespace {

// Opens and closes one TCP connection to 127.0.0.1:port (or `host`, if an
// IPv4 address other than 0.0.0.0).
void Knock(const std::string& host, int port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1 || sa.sin_addr.s_addr == INADDR_ANY) {
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  (void)connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  close(fd);
}

}  // namespace

MetricsServer::~MetricsServer() {
  // CivetWeb's listener waits for connections in a poll() with a 2 s timeout
  // and looks at its stop flag only between polls, so stopping it would take
  // up to 2 s of every daemon's shutdown. A connection wakes the poll: knock
  // until the Exposer has stopped (once stopping, the listener accepts
  // nothing, and the knocks are refused when it closes).
  std::atomic<bool> stopped{false};
  std::thread knocker([this, &stopped] {
    while (!stopped.load()) {
      Knock(host_, port_);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  exposer_.reset();  // joins CivetWeb's threads: no scrape runs after this
  stopped = true;
  knocker.join();
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address \"", listen, "\" is not HOST:PORT"));
  }
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    // Two threads: a scrape never waits behind another for long.
    exposer = std::make_unique<prometheus::Exposer>(listen, 2);
  } catch (const std::exception& e) {
    // CivetWeb's message ("null context when constructing CivetServer...")
    // says little; the usual cause is a port in use.
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", listen, " (address in use?): ", e.what()));
  }
  const std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen));
  }
  return std::unique_ptr<MetricsServer>(
      new MetricsServer(std::move(exposer), listen.substr(0, colon), ports.front()));
}

void MetricsServer::Register(const std::weak_ptr<prometheus::Collectable>& collectable) {
  exposer_->RegisterCollectable(collectable);
}

std::string MetricsServer::address() const { return absl::StrCat(host_, ":", port_); }

RequestMetrics::RequestMetrics(prometheus::Registry& registry, std::string service)
    : service_(std::move(service)),
      family_(prometheus::BuildHistogram()
                  .Name("dstack_request_duration_seconds")
                  .Help("Time from a request's arrival to its reply, by service and operation "
                        "(writes: until applied here; reads: until the read point was served)")
                  .Register(registry)) {}

prometheus::Histogram& RequestMetrics::Op(std::string_view op) {
  int n = size_.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    if (entries_[i].op == op) return *entries_[i].histogram;
  }
  absl::MutexLock lock(&mu_);
  n = size_.load(std::memory_order_relaxed);
  for (int i = 0; i < n; ++i) {
    if (entries_[i].op == op) return *entries_[i].histogram;
  }
  prometheus::Histogram& h =
      family_.Add({{"service", service_}, {"op", std::string(op)}}, LatencyBucketsSeconds());
  // Past kMaxOps (a programming error: operations are a fixed set) the
  // histogram still counts, but each call takes this lookup's slow path.
  if (n < kMaxOps) {
    entries_[n] = {std::string(op), &h};
    size_.store(n + 1, std::memory_order_release);
  }
  return h;
}

}  // namespace ds::common
