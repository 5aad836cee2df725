// StreamRegistry: the open server streams of a service, so that a graceful
// shutdown can end them. gRPC's Server::Shutdown(deadline) lets calls in
// progress run until the deadline; a long-lived stream (Raft's Stream,
// KvService.Batch) never ends by itself, so without this every shutdown
// would take the whole deadline.
#pragma once

#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace ds::common {

// A server stream that can be told to end (Close must be idempotent and safe
// to call from any thread, with no lock of the registry held).
class ClosableStream {
 public:
  virtual ~ClosableStream() = default;
  virtual void Close() = 0;
};

class StreamRegistry {
 public:
  // Tracks `stream` while it lives (it owns itself; the registry only holds a
  // weak reference). After CloseAll() it is closed at once instead.
  void Add(const std::shared_ptr<ClosableStream>& stream);

  // Closes every open stream and every one added later.
  void CloseAll();

 private:
  absl::Mutex mu_;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::weak_ptr<ClosableStream>> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ds::common
