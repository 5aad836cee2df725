#include "common/stream_registry.h"

#include <algorithm>

namespace ds::common {

void StreamRegistry::Add(const std::shared_ptr<ClosableStream>& stream) {
  {
    absl::MutexLock lock(&mu_);
    if (!closing_) {
      // Forget streams that are gone, so the list stays as long as the open set.
      streams_.erase(
          std::remove_if(streams_.begin(), streams_.end(),
                         [](const std::weak_ptr<ClosableStream>& s) { return s.expired(); }),
          streams_.end());
      streams_.push_back(stream);
      return;
    }
  }
  stream->Close();
}

void StreamRegistry::CloseAll() {
  std::vector<std::shared_ptr<ClosableStream>> open;
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    for (auto& weak : streams_) {
      if (auto s = weak.lock()) open.push_back(std::move(s));
    }
    streams_.clear();
  }
  // The references taken above keep each stream alive while it is closed.
  for (auto& s : open) s->Close();
}

}  // namespace ds::common
