// The element values and addressing of tp_rank_pool.h, on a host image of a pool.
#include <algorithm>
#include <cstring>

#include "common/block_pattern.h"
#include "tp/tp_rank_pool.h"

namespace kvferry::cli {
namespace {

// The value of every element of a row (layer, kv, token, model head), dim by dim.
void row_values(std::uint64_t seed, std::uint32_t layer, std::uint32_t kv, std::uint64_t token, std::uint32_t head,
                std::uint32_t head_dim, std::uint32_t element_bytes, std::uint8_t* out) {
  const std::uint64_t key = mix64(seed ^ mix64((std::uint64_t{layer} << 44) ^ (std::uint64_t{kv} << 43) ^
                                           (std::uint64_t{head} << 32) ^ token));
  for (std::uint32_t d = 0; d < head_dim; ++d) {
    const std::uint64_t v = mix64(key + d);
    std::memcpy(out + std::uint64_t{d} * element_bytes, &v, element_bytes);
  }
}

// Offset in a contiguous pool image of the row (layer, kv, block, slot, local head),
// written from kv_layout.h's table of arrangements.
std::uint64_t row_offset(const KvLayout& layout, std::uint32_t layer, std::uint32_t kv, std::uint32_t block,
                         std::uint32_t slot, std::uint32_t head) {
  const KvGeometry& g = layout.geometry();
  const std::uint64_t row = std::uint64_t{g.head_dim} * dtype_bytes(g.dtype);
  std::uint32_t lane = layer;
  std::uint64_t inside = 0;
  switch (layout.arrangement()) {
    case KvArrangement::kVllmNhd:  // [2, blocks, tokens, heads, dim]
    case KvArrangement::kSglangTokenSlots:  // k, v: [slots, heads, dim]
      lane = layer * 2 + kv;
      inside = (std::uint64_t{slot} * g.kv_heads + head) * row;
      break;
    case KvArrangement::kVllmHnd:  // [2, blocks, heads, tokens, dim]
      lane = layer * 2 + kv;
      inside = (std::uint64_t{head} * g.block_tokens + slot) * row;
      break;
    case KvArrangement::kFlashInfer:  // [blocks, 2, tokens, heads, dim]
      inside = ((std::uint64_t{kv} * g.block_tokens + slot) * g.kv_heads + head) * row;
      break;
    case KvArrangement::kMla:  // [blocks, tokens, latent]
      inside = std::uint64_t{slot} * row;
      break;
  }
  return std::uint64_t{layout.tensor_of_lane(lane)} * layout.tensor_bytes() + layout.segment_offset(lane, block) + inside;
}

template <typename Visit>
void for_each_row(const KvLayout& layout, std::span<const std::uint32_t> blocks, std::uint64_t tokens, HeadRange heads,
                  Visit visit) {
  const KvGeometry& g = layout.geometry();
  const std::uint32_t kv_parts = layout.arrangement() == KvArrangement::kMla ? 1 : 2;
  for (std::uint32_t layer = 0; layer < g.layers; ++layer) {
    for (std::uint32_t kv = 0; kv < kv_parts; ++kv) {
      for (std::uint64_t t = 0; t < tokens; ++t) {
        const std::uint32_t block = blocks[t / g.block_tokens];
        const auto slot = static_cast<std::uint32_t>(t % g.block_tokens);
        for (std::uint32_t h = 0; h < heads.count; ++h) {
          if (!visit(layer, kv, t, h, row_offset(layout, layer, kv, block, slot, h))) return;
        }
      }
    }
  }
}

}  // namespace

void fill_tp_image(const KvLayout& layout, std::uint8_t* base, std::span<const std::uint32_t> blocks,
                   std::uint64_t tokens, HeadRange heads, std::uint64_t seed) {
  const KvGeometry& g = layout.geometry();
  for_each_row(layout, blocks, tokens, heads, [&](std::uint32_t layer, std::uint32_t kv, std::uint64_t t, std::uint32_t h,
                                                  std::uint64_t offset) {
    row_values(seed, layer, kv, t, heads.first + h, g.head_dim, dtype_bytes(g.dtype), base + offset);
    return true;
  });
}

std::optional<std::string> check_and_clear_tp_image(const KvLayout& layout, std::uint8_t* base,
                                                    std::span<const std::uint32_t> blocks, std::uint64_t tokens,
                                                    HeadRange heads, std::uint64_t seed, std::uint8_t poison) {
  const KvGeometry& g = layout.geometry();
  const std::uint32_t eb = dtype_bytes(g.dtype);
  const std::uint64_t row = std::uint64_t{g.head_dim} * eb;
  std::vector<std::uint8_t> expected(row);
  std::optional<std::string> bad;
  for_each_row(layout, blocks, tokens, heads, [&](std::uint32_t layer, std::uint32_t kv, std::uint64_t t, std::uint32_t h,
                                                  std::uint64_t offset) {
    row_values(seed, layer, kv, t, heads.first + h, g.head_dim, eb, expected.data());
    if (std::memcmp(base + offset, expected.data(), row) != 0) {
      std::uint32_t d = 0;
      while (d < g.head_dim && std::memcmp(base + offset + std::uint64_t{d} * eb, expected.data() + std::uint64_t{d} * eb, eb) == 0) ++d;
      bad = "layer " + std::to_string(layer) + (kv == 0 ? " K" : " V") + " token " + std::to_string(t) + " head " +
            std::to_string(heads.first + h) + " dim " + std::to_string(d) + " differs from what it must hold";
      return false;
    }
    std::memset(base + offset, poison, row);
    return true;
  });
  if (bad) return bad;
  const std::uint64_t bytes = layout.pool_bytes();
  const std::vector<std::uint8_t> clean(64 * 1024, poison);
  for (std::uint64_t at = 0; at < bytes; at += clean.size()) {
    const std::uint64_t n = std::min<std::uint64_t>(clean.size(), bytes - at);
    if (std::memcmp(base + at, clean.data(), n) == 0) continue;
    std::uint64_t i = at;
    while (base[i] == poison) ++i;
    return "byte " + std::to_string(i) + " of the pool, outside the request's elements, was written";
  }
  return std::nullopt;
}

}  // namespace kvferry::cli
