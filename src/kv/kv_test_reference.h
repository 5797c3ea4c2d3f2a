// Test-only: the naive reference the KV layer is checked against. It places every
// element (layer, kv, block, token, head, dim) by the arrangement's tensor shape,
// written out index by index, independent of the lane arithmetic in kv_layout.cc.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "kvferry/kv/kv_layout.h"
#include "kvferry/kv/kv_pool.h"

namespace kvferry::kv_testing {

struct Place {
  std::uint32_t tensor = 0;
  std::uint64_t offset = 0;  // of the element's first byte, inside the tensor
};

inline std::uint32_t kv_factor(const KvLayout& layout) {
  return layout.arrangement() == KvArrangement::kMla ? 1 : 2;
}

inline Place naive_place(const KvLayout& layout, std::uint64_t layer, std::uint64_t kv, std::uint64_t b,
                         std::uint64_t t, std::uint64_t h, std::uint64_t d) {
  const KvGeometry& g = layout.geometry();
  const std::uint64_t B = layout.blocks(), T = g.block_tokens, H = g.kv_heads, D = g.head_dim;
  const std::uint64_t e = dtype_bytes(g.dtype);
  const auto l = static_cast<std::uint32_t>(layer);
  switch (layout.arrangement()) {
    case KvArrangement::kVllmNhd: return {l, ((((kv * B + b) * T + t) * H + h) * D + d) * e};
    case KvArrangement::kVllmHnd: return {l, ((((kv * B + b) * H + h) * T + t) * D + d) * e};
    case KvArrangement::kFlashInfer: return {l, ((((b * 2 + kv) * T + t) * H + h) * D + d) * e};
    case KvArrangement::kSglangTokenSlots:
      return {static_cast<std::uint32_t>(2 * layer + kv), (((b * T + t) * H + h) * D + d) * e};
    case KvArrangement::kMla: return {l, ((b * T + t) * D + d) * e};
  }
  return {};
}

// Every byte of block `b` of `layer`, as (tensor, offset), in element order.
inline std::vector<std::pair<std::uint32_t, std::uint64_t>> naive_block_bytes(const KvLayout& layout,
                                                                              std::uint32_t layer,
                                                                              std::uint32_t b) {
  const KvGeometry& g = layout.geometry();
  std::vector<std::pair<std::uint32_t, std::uint64_t>> bytes;
  for (std::uint32_t kv = 0; kv < kv_factor(layout); ++kv)
    for (std::uint32_t t = 0; t < g.block_tokens; ++t)
      for (std::uint32_t h = 0; h < g.kv_heads; ++h)
        for (std::uint32_t d = 0; d < g.head_dim; ++d) {
          const Place p = naive_place(layout, layer, kv, b, t, h, d);
          for (std::uint32_t i = 0; i < dtype_bytes(g.dtype); ++i) bytes.emplace_back(p.tensor, p.offset + i);
        }
  return bytes;
}

// Same, as virtual addresses in `pool`.
inline std::vector<std::uint64_t> naive_block_addresses(const KvPool& pool, std::uint32_t layer,
                                                        std::uint32_t b) {
  std::vector<std::uint64_t> out;
  for (const auto& [tensor, offset] : naive_block_bytes(pool.layout(), layer, b))
    out.push_back(pool.tensor_addresses()[tensor] + offset);
  return out;
}

// Small geometries that still exercise every dimension (no size equal to another).
inline KvGeometry small_geometry(KvArrangement arrangement) {
  KvGeometry g;
  g.layers = 3;
  g.kv_heads = arrangement == KvArrangement::kMla ? 1 : 2;
  g.head_dim = 5;
  g.block_tokens = 4;
  g.dtype = KvDtype::kFp16;
  return g;
}

inline constexpr KvArrangement kAllArrangements[] = {KvArrangement::kVllmNhd, KvArrangement::kVllmHnd,
                                                     KvArrangement::kFlashInfer,
                                                     KvArrangement::kSglangTokenSlots, KvArrangement::kMla};

}  // namespace kvferry::kv_testing
