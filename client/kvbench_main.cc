// kvbench: load generator for the KV-Raft service. N clients (each its own
// session, one operation at a time) over M shared Batch-stream connections; reports
// throughput and latency percentiles.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/random/random.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/blocking_counter.h"
#include "client/clerk.h"
#include "client/kv_stream.h"
#include "client/shardkv_client.h"
#include "common/init.h"
#include "common/stats.h"
#include "common/tls.h"
#include "shardkv/key_shard.h"

ABSL_FLAG(std::string, endpoints, "",
          "Comma-separated kvraft replica addresses HOST:PORT. Required unless --controllers.");
ABSL_FLAG(std::string, controllers, "",
          "Comma-separated shard controller addresses HOST:PORT: run against the sharded "
          "service instead (keys routed by shard; groups found through the controller).");
ABSL_FLAG(int, clients, 16, "Concurrent clients; each is one session with one request in flight.");
ABSL_FLAG(int, conns, 0, "TCP connections per replica shared by the clients. 0: one per client.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(30), "How long to run.");
ABSL_FLAG(int, value_size, 256, "Bytes per written value.");
ABSL_FLAG(double, read_ratio, 0.5, "Fraction of operations that are (linearizable) Gets, 0..1.");
ABSL_FLAG(int, keys, 10000, "Number of distinct keys, chosen uniformly.");
ABSL_FLAG(bool, random_values, false,
          "Write random (incompressible) values, a different one per write, instead of the "
          "same bytes every time.");
ABSL_FLAG(bool, fill, false,
          "Load a dataset instead: write every key of --keys exactly once, in order, then stop "
          "(or at --duration). Ignores --read-ratio.");
ABSL_FLAG(int, skip_shard, -1,
          "With --controllers: never use keys of this shard (to measure the other shards while "
          "it moves between groups). -1: use every key.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(10),
          "Deadline of one operation, retries included.");
ABSL_FLAG(std::string, write_out, "simple", "Output format: simple or json (also -w json).");

namespace {

constexpr char kUsageText[] = R"(kvbench: load generator for the KV-Raft service.

Usage: kvbench --endpoints=H:P,... | --controllers=H:P,...
               [--clients=N] [--conns=M] [--duration=30s]
               [--value_size=256] [--read_ratio=0.5] [--keys=10000] [-w json]
With --controllers the load goes to the sharded service: each client is one
session across all groups, with M connections per replica of each group.
Prints operations/s and latency p50/p90/p99/max (ms); a progress line every 5 s
on stderr. Exit 0 if the run completed, 1 if any operation failed, 2 on bad
flags.)";

struct ClientStats {
  std::vector<int64_t> latencies_us;
  int64_t reads = 0;
  int64_t writes = 0;
  int64_t errors = 0;
  std::string last_error;
};

// One client session with one operation at a time, of either service.
class BenchClient {
 public:
  virtual ~BenchClient() = default;
  virtual void Get(std::string key, std::function<void(absl::StatusOr<ds::client::GetResult>)>) = 0;
  virtual void Put(std::string key, std::string value, std::function<void(absl::Status)>) = 0;
};

template <typename C>
class BenchClientOf final : public BenchClient {
 public:
  template <typename... Args>
  explicit BenchClientOf(Args&&... args) : c_(std::forward<Args>(args)...) {}
  void Get(std::string key,
           std::function<void(absl::StatusOr<ds::client::GetResult>)> done) override {
    c_.Get(std::move(key), std::move(done));
  }
  void Put(std::string key, std::string value, std::function<void(absl::Status)> done) override {
    c_.Put(std::move(key), std::move(value), std::move(done));
  }
  C& client() { return c_; }

 private:
  C c_;
};

// Makes the clients: AsyncClerks over one KvPool (kvraft), or
// ShardedKvClients over one KvPool per group, found through the controller.
class Clients {
 public:
  Clients(ds::client::ClerkOptions options, int conns, bool sharded)
      : options_(std::move(options)), conns_(conns) {
    if (!sharded) {
      pool_ = std::make_shared<ds::client::KvPool>(options_.endpoints, conns, options_.credentials);
      return;
    }
    ctrl_transport_ = std::make_unique<ds::client::GrpcCtrlTransport>(options_);
    ctrl_ = std::make_unique<ds::client::CtrlClient>(
        ctrl_transport_.get(), std::make_shared<ds::client::LeaderCache>(options_.endpoints),
        ds::client::ToRetryOptions(options_));
  }

  // The sharded service's shard count (from the latest configuration).
  absl::StatusOr<int> ShardCount() {
    auto config = ds::client::Await<absl::StatusOr<ds::ctrl::pb::Config>>(
        [&](auto cb) { ctrl_->Query(-1, std::move(cb)); });
    if (!config.ok()) return config.status();
    return config->shards_size();
  }

  std::unique_ptr<BenchClient> Make(int connection) {
    if (pool_ != nullptr) {
      return std::make_unique<BenchClientOf<ds::client::AsyncClerk>>(options_, pool_, connection);
    }
    // A client's transports to the groups it meets, on the shared pools.
    auto transports = std::make_shared<
        std::map<std::vector<std::string>, std::unique_ptr<ds::client::KvPoolTransport>>>();
    return std::make_unique<BenchClientOf<ds::client::ShardedKvClient>>(
        ctrl_.get(), ctrl_transport_.get(),
        [this, transports, connection](const std::vector<std::string>& servers) {
          auto& t = (*transports)[servers];
          if (t == nullptr) {
            t = std::make_unique<ds::client::KvPoolTransport>(Pool(servers), connection);
          }
          return t.get();
        },
        ds::client::ToRetryOptions(options_));
  }

 private:
  ds::client::KvPool* Pool(const std::vector<std::string>& servers) {
    absl::MutexLock lock(&mu_);
    auto& p = group_pools_[servers];
    if (p == nullptr) {
      p = std::make_unique<ds::client::KvPool>(servers, conns_, options_.credentials);
    }
    return p.get();
  }

  const ds::client::ClerkOptions options_;
  const int conns_;
  std::shared_ptr<ds::client::KvPool> pool_;
  std::unique_ptr<ds::client::GrpcCtrlTransport> ctrl_transport_;
  std::unique_ptr<ds::client::CtrlClient> ctrl_;
  absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<ds::client::KvPool>> group_pools_;
};

// The q-quantile of latencies in microseconds, in milliseconds.
double PercentileMs(const std::vector<int64_t>& sorted_us, double q) {
  return static_cast<double>(ds::common::Percentile(sorted_us, q)) / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> rewritten;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-w" || a == "--write-out") a = "--write_out";
    rewritten.push_back(a);
  }
  std::vector<char*> args;
  for (auto& a : rewritten) args.push_back(a.data());
  ds::common::InitProcess(static_cast<int>(args.size()), args.data(), kUsageText);

  const bool sharded =
      absl::GetFlag(FLAGS_endpoints).empty() && !absl::GetFlag(FLAGS_controllers).empty();
  auto endpoints = ds::client::ParseEndpoints(sharded ? absl::GetFlag(FLAGS_controllers)
                                                      : absl::GetFlag(FLAGS_endpoints));
  const int clients = absl::GetFlag(FLAGS_clients);
  int conns = absl::GetFlag(FLAGS_conns);
  const double read_ratio = absl::GetFlag(FLAGS_read_ratio);
  const int keys = absl::GetFlag(FLAGS_keys);
  const int value_size = absl::GetFlag(FLAGS_value_size);
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  const bool json = absl::GetFlag(FLAGS_write_out) == "json";
  std::string bad;
  if (!endpoints.ok())
    bad = absl::StrCat(sharded ? "--controllers: " : "--endpoints: ", endpoints.status().message());
  else if (clients < 1)
    bad = "--clients must be >= 1";
  else if (conns < 0)
    bad = "--conns must be >= 0";
  else if (read_ratio < 0 || read_ratio > 1)
    bad = "--read_ratio must be in [0, 1]";
  else if (keys < 1)
    bad = "--keys must be >= 1";
  else if (value_size < 0)
    bad = "--value_size must be >= 0";
  else if (duration <= absl::ZeroDuration())
    bad = "--duration must be positive";
  else if (!json && absl::GetFlag(FLAGS_write_out) != "simple")
    bad = "-w must be simple or json";
  if (!bad.empty()) {
    std::cerr << "kvbench: " << bad << "\n";
    return 2;
  }
  if (conns == 0 || conns > clients) conns = clients;

  // The clients share `conns` Batch-stream connections to each replica:
  // client i uses connection i % conns.
  auto credentials = ds::common::ClientCredentialsFromFlags();
  if (!credentials.ok()) {
    std::cerr << "kvbench: " << credentials.status().message() << "\n";
    return 2;
  }
  const ds::client::ClerkOptions clerk_options{.endpoints = *endpoints,
                                               .operation_timeout = absl::GetFlag(FLAGS_timeout),
                                               .credentials = *credentials};
  Clients clients_of(clerk_options, conns, sharded);
  std::vector<ClientStats> stats(clients);
  std::atomic<int64_t> done_ops{0};
  std::atomic<bool> stop{false};
  absl::BlockingCounter finished(clients);
  const std::string value(value_size, 'v');
  // --random-values: each write takes value_size bytes at a random offset of
  // a random buffer (made once, so no time goes to generating them).
  const bool random_values = absl::GetFlag(FLAGS_random_values);
  std::string random_pool;
  if (random_values) {
    absl::BitGen gen;
    random_pool.resize(static_cast<size_t>(value_size) + (1 << 20));
    for (char& ch : random_pool) ch = static_cast<char>(absl::Uniform<int>(gen, 0, 256));
  }
  const absl::Time start = absl::Now();
  const absl::Time end = start + duration;

  // One client: each operation's callback records it and starts the next, so
  // no thread waits per client.
  struct Client {
    std::unique_ptr<BenchClient> clerk;
    absl::BitGen rng;
    absl::Time t0;
    bool read = false;
  };
  // Keys of --skip-shard are never chosen: key-NNNNNNNN for N in `usable`.
  std::vector<int> usable;
  const int skip_shard = absl::GetFlag(FLAGS_skip_shard);
  if (skip_shard >= 0) {
    if (!sharded) {
      std::cerr << "kvbench: --skip-shard needs --controllers\n";
      return 2;
    }
    auto shards = clients_of.ShardCount();
    if (!shards.ok()) {
      std::cerr << "kvbench: reading the configuration: " << shards.status().message() << "\n";
      return 1;
    }
    for (int k = 0; k < keys; ++k) {
      if (static_cast<int>(ds::shardkv::KeyToShard(absl::StrFormat("key-%08d", k), *shards)) !=
          skip_shard) {
        usable.push_back(k);
      }
    }
    if (usable.empty()) {
      std::cerr << "kvbench: every key is in shard " << skip_shard << "\n";
      return 2;
    }
  }
  std::vector<Client> cs(clients);
  const bool fill = absl::GetFlag(FLAGS_fill);
  std::atomic<int> next_fill{0};
  std::function<void(int)> next = [&](int i) {
    Client& c = cs[i];
    const int filled = fill ? next_fill.fetch_add(1, std::memory_order_relaxed) : 0;
    if (stop.load(std::memory_order_relaxed) || absl::Now() >= end || filled >= keys) {
      finished.DecrementCount();
      return;
    }
    const int k = fill             ? filled
                  : usable.empty() ? absl::Uniform(c.rng, 0, keys)
                                   : usable[absl::Uniform<size_t>(c.rng, 0, usable.size())];
    std::string key = absl::StrFormat("key-%08d", k);
    c.read = !fill && absl::Bernoulli(c.rng, read_ratio);
    c.t0 = absl::Now();
    auto record = [&, i](const absl::Status& st) {
      Client& c = cs[i];
      ClientStats& s = stats[i];
      if (!st.ok()) {
        s.errors++;
        s.last_error = std::string(st.message());
      } else {
        s.latencies_us.push_back(absl::ToInt64Microseconds(absl::Now() - c.t0));
        (c.read ? s.reads : s.writes)++;
        done_ops.fetch_add(1, std::memory_order_relaxed);
      }
      next(i);
    };
    if (c.read) {
      c.clerk->Get(std::move(key),
                   [record](absl::StatusOr<ds::client::GetResult> r) { record(r.status()); });
    } else {
      c.clerk->Put(std::move(key),
                   random_values ? random_pool.substr(absl::Uniform<size_t>(c.rng, 0, 1 << 20),
                                                      static_cast<size_t>(value_size))
                                 : value,
                   record);
    }
  };
  for (int i = 0; i < clients; ++i) cs[i].clerk = clients_of.Make(i % conns);
  for (int i = 0; i < clients; ++i) next(i);
  // Progress line every 5 s.
  int64_t last_ops = 0;
  absl::Time last = start;
  // A fill ends once every client found no key left.
  auto filled_all = [&] { return fill && next_fill.load() >= keys + clients; };
  while (absl::Now() < end && !filled_all()) {
    const absl::Time report = std::min(end, absl::Now() + absl::Seconds(5));
    while (absl::Now() < report && !filled_all()) {
      absl::SleepFor(std::min(absl::Milliseconds(100), report - absl::Now()));
    }
    absl::Time now = absl::Now();
    int64_t ops = done_ops.load();
    if (now < end && !filled_all()) {
      std::fprintf(stderr, "kvbench: %.0fs elapsed, %lld ops, %.0f ops/s now\n",
                   absl::ToDoubleSeconds(now - start), static_cast<long long>(ops),
                   (ops - last_ops) / absl::ToDoubleSeconds(now - last));
    }
    last_ops = ops;
    last = now;
  }
  stop = true;
  finished.Wait();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);

  std::vector<int64_t> all;
  int64_t reads = 0, writes = 0, errors = 0;
  std::string last_error;
  for (auto& s : stats) {
    all.insert(all.end(), s.latencies_us.begin(), s.latencies_us.end());
    reads += s.reads;
    writes += s.writes;
    errors += s.errors;
    if (!s.last_error.empty()) last_error = s.last_error;
  }
  std::sort(all.begin(), all.end());
  const double ops_per_sec = all.size() / elapsed;
  const double mx = all.empty() ? 0 : all.back() / 1000.0;
  if (json) {
    std::printf(
        "{\"clients\":%d,\"conns\":%d,\"duration_s\":%.3f,\"value_size\":%d,\"read_ratio\":%.3f,"
        "\"keys\":%d,\"ops\":%zu,\"reads\":%lld,\"writes\":%lld,\"errors\":%lld,"
        "\"ops_per_sec\":%.1f,\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}}"
        "\n",
        clients, conns, elapsed, value_size, read_ratio, keys, all.size(),
        static_cast<long long>(reads), static_cast<long long>(writes),
        static_cast<long long>(errors), ops_per_sec, PercentileMs(all, 0.5), PercentileMs(all, 0.9),
        PercentileMs(all, 0.99), mx);
  } else {
    std::printf(
        "kvbench: clients=%d conns=%d duration=%.1fs value_size=%d read_ratio=%.2f keys=%d\n",
        clients, conns, elapsed, value_size, read_ratio, keys);
    std::printf("ops: %zu (reads %lld, writes %lld, errors %lld)\n", all.size(),
                static_cast<long long>(reads), static_cast<long long>(writes),
                static_cast<long long>(errors));
    std::printf("throughput: %.1f ops/s\n", ops_per_sec);
    std::printf("latency (ms): p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n", PercentileMs(all, 0.5),
                PercentileMs(all, 0.9), PercentileMs(all, 0.99), mx);
  }
  if (errors > 0) {
    std::fprintf(stderr, "kvbench: %lld operations failed; last error: %s\n",
                 static_cast<long long>(errors), last_error.c_str());
    return 1;
  }
  return 0;
}
