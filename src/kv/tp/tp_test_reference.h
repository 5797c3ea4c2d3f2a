// Test-only: the naive element-by-element reference of the head gather/scatter
// (kvferry/kv/kv_head_copy.h), and host pools to run it on. It places every element with
// kv_testing::naive_place (the arrangement's tensor shape written out index by index) and
// the staging with its own index formula: nothing is shared with the code under test.
// Used by the CPU tests (src/kv/tp/) and the GPU tests (tests/gpu_head_copy_test.cc).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <vector>

#include "kv/kv_test_reference.h"
#include "kvferry/kv/kv_head_copy.h"
#include "kvferry/kv/kv_pool.h"

namespace kvferry::tp_testing {

// A dram pool over its own bytes.
struct HostPool {
  std::vector<std::uint8_t> bytes;
  KvPool pool;

  static HostPool make(const KvGeometry& g, KvArrangement a, std::uint32_t blocks) {
    auto layout = KvLayout::create(g, a, blocks);
    std::vector<std::uint8_t> bytes(layout.value().pool_bytes());
    auto pool = KvPool::create_contiguous(layout.value(), MemoryKind::kDram,
                                          reinterpret_cast<std::uint64_t>(bytes.data()));
    return HostPool{std::move(bytes), std::move(pool).value()};
  }
  std::uint64_t base() const { return reinterpret_cast<std::uint64_t>(bytes.data()); }
};

inline void fill_random(std::span<std::uint8_t> bytes, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(bytes.data() + i, &v, 8);
  }
  for (; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(rng());
}

inline std::uint32_t kv_parts(const KvLayout& layout) { return kv_testing::kv_factor(layout); }

// Byte offset in the staging of element (h, layer, kv, t, d), byte 0.
inline std::uint64_t naive_staging_offset(const KvLayout& layout, std::uint64_t tokens, std::uint64_t h,
                                          std::uint64_t layer, std::uint64_t kv, std::uint64_t t,
                                          std::uint64_t d) {
  const KvGeometry& g = layout.geometry();
  return ((((h * g.layers + layer) * kv_parts(layout) + kv) * tokens + t) * g.head_dim + d) *
         dtype_bytes(g.dtype);
}

// Calls `f(pool_offset_from_pool_base, staging_offset, element_bytes)` for every element the
// window's heads cover. `pool_base_of_tensor` turns (tensor) into its offset from the
// pool's first byte (pools made with create_contiguous: tensor * tensor_bytes).
template <typename F>
void for_each_element(const KvLayout& layout, const KvTokenWindow& w, HeadRange heads, F&& f) {
  const KvGeometry& g = layout.geometry();
  const std::uint32_t e = dtype_bytes(g.dtype);
  for (std::uint32_t h = 0; h < heads.count; ++h)
    for (std::uint32_t l = 0; l < g.layers; ++l)
      for (std::uint32_t kv = 0; kv < kv_parts(layout); ++kv)
        for (std::uint64_t t = 0; t < w.tokens; ++t) {
          const std::uint64_t token = w.first_token + t;
          const std::uint32_t block = w.block_ids[token / g.block_tokens];
          for (std::uint32_t d = 0; d < g.head_dim; ++d) {
            const kv_testing::Place p =
                kv_testing::naive_place(layout, l, kv, block, token % g.block_tokens, heads.first + h, d);
            f(p.tensor * layout.tensor_bytes() + p.offset,
              naive_staging_offset(layout, w.tokens, h, l, kv, t, d), e);
          }
        }
}

// The reference gather of a contiguous pool's bytes into `staging` (sized by the caller).
inline void naive_gather(const KvLayout& layout, const std::uint8_t* pool, const KvTokenWindow& w,
                         HeadRange heads, std::uint8_t* staging) {
  for_each_element(layout, w, heads, [&](std::uint64_t p, std::uint64_t s, std::uint32_t e) {
    for (std::uint32_t i = 0; i < e; ++i) staging[s + i] = pool[p + i];
  });
}

inline void naive_scatter(const KvLayout& layout, const std::uint8_t* staging, const KvTokenWindow& w,
                          HeadRange heads, std::uint8_t* pool) {
  for_each_element(layout, w, heads, [&](std::uint64_t p, std::uint64_t s, std::uint32_t e) {
    for (std::uint32_t i = 0; i < e; ++i) pool[p + i] = staging[s + i];
  });
}

// `count` distinct block ids out of `blocks`, shuffled (scattered blocks, as engines have).
inline std::vector<std::uint32_t> scattered_blocks(std::uint32_t blocks, std::uint32_t count,
                                                   std::uint64_t seed) {
  std::vector<std::uint32_t> ids(blocks);
  for (std::uint32_t i = 0; i < blocks; ++i) ids[i] = i;
  std::mt19937_64 rng(seed);
  std::shuffle(ids.begin(), ids.end(), rng);
  ids.resize(count);
  return ids;
}

inline KvStaging host_staging(std::vector<std::uint8_t>& bytes) {
  return KvStaging{reinterpret_cast<std::uint64_t>(bytes.data()), bytes.size(), MemoryKind::kDram, 0};
}

}  // namespace kvferry::tp_testing
