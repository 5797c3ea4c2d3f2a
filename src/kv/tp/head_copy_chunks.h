// The pieces of a head gather/scatter that goes through device scratch (a vram pool with
// pinned host staging): (head, layer range) slices, each one contiguous range of the
// staging, small enough for half of the scratch (two pieces in flight: one being
// gathered or scattered by the kernel, one being copied by the copy engine).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kv/tp/head_copy_plan.h"

namespace kvferry::detail {

struct HeadCopyChunk {
  HeadCopyPlan plan;         // one staging head, layers [plan.layer_first, + plan.layers)
  std::uint64_t offset = 0;  // of the piece in the whole staging
  std::uint64_t bytes = 0;
};

// Empty when one layer of one head does not fit in `piece_bytes`.
inline std::vector<HeadCopyChunk> head_copy_chunks(const HeadCopyPlan& whole, std::uint64_t piece_bytes) {
  std::vector<HeadCopyChunk> out;
  const std::uint64_t per_layer = std::uint64_t{whole.kv_parts} * whole.tokens * whole.row_bytes;
  if (per_layer == 0 || per_layer > piece_bytes) return out;
  const auto step =
      static_cast<std::uint32_t>(std::min<std::uint64_t>(whole.layers, piece_bytes / per_layer));
  for (std::uint32_t h = 0; h < whole.heads; ++h) {
    for (std::uint32_t l = 0; l < whole.layers; l += step) {
      HeadCopyChunk c;
      c.plan = whole;
      c.plan.heads = 1;
      c.plan.head_first = whole.head_first + h;
      c.plan.layer_first = whole.layer_first + l;
      c.plan.layers = std::min(step, whole.layers - l);
      c.offset = whole.staging_row(h, l, 0, 0);
      c.bytes = c.plan.layers * per_layer;
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace kvferry::detail
