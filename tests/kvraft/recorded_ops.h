// Put, Append and Get through an asynchronous KV client (client::KvClient,
// client::ShardedKvClient: anything with Put/Append(key, value, cb) and
// Get(key, cb)), waited for and recorded in a linearizability history. Shared
// by the lab 3 and lab 4B harnesses' clerks.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/kv_client.h"
#include "client/replica_client.h"
#include "tests/lincheck/linearizability.h"

namespace ds::kv {

// A write (kPut or kAppend). On failure the outcome stays unknown in the
// history (begun, never ended): it may or may not have been applied.
template <typename Client>
absl::Status RecordedWrite(lincheck::HistoryRecorder& history, int64_t label, Client& client,
                           lincheck::OpKind kind, const std::string& key,
                           const std::string& value) {
  auto h = history.Begin(label, kind, key, value);
  absl::Status st = client::Await<absl::Status>([&](std::function<void(absl::Status)> cb) {
    if (kind == lincheck::OpKind::kAppend) {
      client.Append(key, value, std::move(cb));
    } else {
      client.Put(key, value, std::move(cb));
    }
  });
  if (st.ok()) history.End(h);
  return st;
}

// A read; one that never returned has no effect on the history.
template <typename Client>
absl::StatusOr<std::string> RecordedGet(lincheck::HistoryRecorder& history, int64_t label,
                                        Client& client, const std::string& key) {
  auto h = history.Begin(label, lincheck::OpKind::kGet, key);
  absl::StatusOr<client::GetResult> r = client::Await<absl::StatusOr<client::GetResult>>(
      [&](std::function<void(absl::StatusOr<client::GetResult>)> cb) {
        client.Get(key, std::move(cb));
      });
  if (!r.ok()) {
    history.Discard(h);
    return r.status();
  }
  history.End(h, r->value);
  return r->value;
}

}  // namespace ds::kv
