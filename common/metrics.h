// Prometheus metrics of the daemons (--metrics-listen=HOST:PORT): the HTTP
// endpoint that serves the text format at /metrics, request latencies by
// operation, and families computed at scrape time.
//
// Nothing here is global: each component gets the registry (or the metrics
// struct) of its daemon, so several replicas in one process (tests) keep
// apart. Counters and histograms that the hot path updates are created once,
// up front; gauges of values that live elsewhere (a Raft term, a session
// count) are read when scraped, through a ScrapeCollectable, instead of being
// updated on every event.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace ds::common {

// --metrics-listen (defined in metrics.cc, so every daemon that links this
// library has it): "" (default) serves no metrics.
std::string MetricsListenFlag();

// Histogram bounds for latencies, in seconds: 50 µs to 10 s, about 2.5x apart.
const prometheus::Histogram::BucketBoundaries& LatencyBucketsSeconds();

// Seconds elapsed since `start` on the steady clock.
inline double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Builds metric families during one scrape (see ScrapeCollectable).
class ScrapeWriter {
 public:
  // Starts a family; the samples added next belong to it.
  void Gauge(std::string name, std::string help) {
    Begin(std::move(name), std::move(help), prometheus::MetricType::Gauge);
  }
  // A counter read from elsewhere (monotonic: a Save count kept by the Node).
  void Counter(std::string name, std::string help) {
    Begin(std::move(name), std::move(help), prometheus::MetricType::Counter);
  }
  void Sample(double value, prometheus::Labels labels = {});

  std::vector<prometheus::MetricFamily> Take() { return std::move(families_); }

 private:
  void Begin(std::string name, std::string help, prometheus::MetricType type);

  std::vector<prometheus::MetricFamily> families_;
};

// A Collectable whose families a callback writes at scrape time, on the
// endpoint's thread: the callback must be thread-safe and quick, and must not
// take a lock that is held across anything slow (an fsync, an RPC).
class ScrapeCollectable final : public prometheus::Collectable {
 public:
  using Fn = std::function<void(ScrapeWriter&)>;
  explicit ScrapeCollectable(Fn fn) : fn_(std::move(fn)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const Fn fn_;
};

// The HTTP endpoint: GET /metrics answers with the text format of every
// collectable registered.
class MetricsServer {
 public:
  // Binds `listen` ("HOST:PORT"; port 0 picks a free one) and serves.
  // kUnavailable if it cannot be bound, kInvalidArgument if malformed.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen);
  // Stops serving; returns once no scrape is running, so that what the
  // collectables read may be destroyed afterwards.
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Serves `collectable` (a Registry, a ScrapeCollectable) from now on, for as
  // long as it lives.
  void Register(const std::weak_ptr<prometheus::Collectable>& collectable);

  // The bound port, and "HOST:PORT" with it.
  int port() const { return port_; }
  std::string address() const;

 private:
  MetricsServer(std::unique_ptr<prometheus::Exposer> exposer, std::string host, int port);

  std::unique_ptr<prometheus::Exposer> exposer_;
  const std::string host_;
  const int port_;
};

// dstack_request_duration_seconds{service,op}: how long a service took to
// answer a request (from its arrival to the call of its reply callback), per
// operation; the histogram's _count is the number of requests.
class RequestMetrics {
 public:
  // `service`: "kvraft", "shardctrler", "shardkv".
  RequestMetrics(prometheus::Registry& registry, std::string service);

  // The histogram of `op` ("get", "put", ...), created on first use (under a
  // mutex); later calls find it without a lock. At most kMaxOps operations.
  prometheus::Histogram& Op(std::string_view op);

 private:
  static constexpr int kMaxOps = 32;
  struct Entry {
    std::string op;
    prometheus::Histogram* histogram = nullptr;
  };

  const std::string service_;
  prometheus::Family<prometheus::Histogram>& family_;
  absl::Mutex mu_;
  // entries_[i] for i < size_ are immutable once size_ covers them: written
  // under mu_ before the release store of size_, read after its acquire load.
  std::array<Entry, kMaxOps> entries_;
  std::atomic<int> size_{0};
};

// Wraps a reply callback so that calling it first records the request's
// latency in `metrics` under `op`; `done` itself when `metrics` is null.
template <typename Response>
std::function<void(Response)> TimedReply(RequestMetrics* metrics, std::string_view op,
                                         std::function<void(Response)> done) {
  if (metrics == nullptr) return done;
  return [histogram = &metrics->Op(op), start = std::chrono::steady_clock::now(),
          done = std::move(done)](Response response) {
    histogram->Observe(SecondsSince(start));
    done(std::move(response));
  };
}

}  // namespace ds::common
