// Which shard a key belongs to: the one definition that clerks and servers
// share. FNV-1a (64-bit) over the key's bytes, modulo the shard count: the
// same on every machine, compiler and run (unlike std::hash or absl::Hash).
#pragma once

#include <cstdint>
#include <string_view>

namespace ds::shardkv {

inline uint64_t StableKeyHash(std::string_view key) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
  return h;
}

// 0 when there are no shards (no configuration yet).
inline uint32_t KeyToShard(std::string_view key, uint32_t shard_count) {
  return shard_count == 0 ? 0 : static_cast<uint32_t>(StableKeyHash(key) % shard_count);
}

}  // namespace ds::shardkv
