// The CPU head gather/scatter (dram pools): one memcpy per head_dim row, or per run of a
// block's tokens where the arrangement keeps them adjacent (vllm-hnd, mla). Rows of the
// common sizes copy through a fixed-size memcpy the compiler inlines as vector moves;
// large copies stream (core/stream_copy.h).
#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "core/stream_copy.h"
#include "kv/tp/head_copy_internal.h"

namespace kvferry::detail {
namespace {

// Copies at least this large write with streaming stores (core/stream_copy.h): the
// staging or pool they write is far beyond the caches, and a plain store's read for
// ownership costs a third of the memory bus.
constexpr std::uint64_t kStreamBytes = 8ull << 20;

// `n` rows of N bytes: from `src` every `src_step` bytes to `dst` every `dst_step`.
template <std::size_t N>
void copy_rows_fixed(std::uint8_t* dst, std::uint64_t dst_step, const std::uint8_t* src,
                     std::uint64_t src_step, std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; ++i, dst += dst_step, src += src_step) std::memcpy(dst, src, N);
}

void copy_rows(std::uint8_t* dst, std::uint64_t dst_step, const std::uint8_t* src, std::uint64_t src_step,
               std::uint64_t n, std::uint64_t bytes, bool stream) {
  if (stream) {
    for (std::uint64_t i = 0; i < n; ++i, dst += dst_step, src += src_step) stream_copy(dst, src, bytes);
    return;
  }
  switch (bytes) {
    case 64: return copy_rows_fixed<64>(dst, dst_step, src, src_step, n);
    case 128: return copy_rows_fixed<128>(dst, dst_step, src, src_step, n);
    case 256: return copy_rows_fixed<256>(dst, dst_step, src, src_step, n);
    case 512: return copy_rows_fixed<512>(dst, dst_step, src, src_step, n);
    default:
      for (std::uint64_t i = 0; i < n; ++i, dst += dst_step, src += src_step) std::memcpy(dst, src, bytes);
  }
}

// Planes are (layer, kv) pairs: [first, last) of them.
void copy_planes(const HeadCopyJob& job, std::uint8_t* staging, std::uint32_t first, std::uint32_t last) {
  const HeadCopyPlan& p = job.plan;
  const bool stream = p.rows() * p.row_bytes >= kStreamBytes;
  struct Fence {
    bool on;
    ~Fence() { if (on) stream_fence(); }  // the copy's end is ordered after its bytes
  } fence{stream};
  const bool gather = job.direction == HeadCopyDirection::kGather;
  const std::uint64_t row = p.row_bytes, bt = p.block_tokens;
  const bool adjacent = p.token_stride == row;  // a block's tokens of one head are one run
  for (std::uint32_t plane = first; plane < last; ++plane) {
    const std::uint32_t layer = plane / p.kv_parts, kv = plane % p.kv_parts;
    auto* base = reinterpret_cast<std::uint8_t*>(job.tensors[p.tensor_index(layer, kv)]) + kv * p.kv_stride +
                 std::uint64_t{p.head_first} * p.head_stride;
    // Window token t sits at slot (first_token + t) of the block table's run.
    for (std::uint64_t t = 0; t < p.tokens;) {
      const std::uint64_t g = p.first_token + t;
      const std::uint64_t slot = g % bt;
      const std::uint64_t n = std::min(bt - slot, p.tokens - t);
      std::uint8_t* pool_rows = base + job.block_ids[g / bt] * p.block_stride + slot * p.token_stride;
      for (std::uint32_t h = 0; h < p.heads; ++h) {
        std::uint8_t* pool_row = pool_rows + h * p.head_stride;
        std::uint8_t* stage_row = staging + p.staging_row(h, layer, kv, t);
        if (adjacent) {
          if (gather)
            copy_rows(stage_row, 0, pool_row, 0, 1, n * row, stream);
          else
            copy_rows(pool_row, 0, stage_row, 0, 1, n * row, stream);
        } else if (gather) {
          copy_rows(stage_row, row, pool_row, p.token_stride, n, row, stream);
        } else {
          copy_rows(pool_row, p.token_stride, stage_row, row, n, row, stream);
        }
      }
      t += n;
    }
  }
}

}  // namespace

void cpu_head_copy(const HeadCopyJob& job, std::uint8_t* staging, std::uint32_t threads) {
  const std::uint32_t planes = job.plan.layers * job.plan.kv_parts;
  if (threads == 0) {
    // A second thread pays only on copies large enough to hide its start (~50 us here).
    const std::uint64_t bytes = job.plan.rows() * job.plan.row_bytes;
    threads = bytes >= (8u << 20) ? std::min(2u, std::max(1u, std::thread::hardware_concurrency())) : 1;
  }
  threads = std::min(threads, planes);
  if (threads <= 1) return copy_planes(job, staging, 0, planes);
  std::vector<std::thread> helpers;
  helpers.reserve(threads - 1);
  for (std::uint32_t i = 1; i < threads; ++i) {
    const std::uint32_t from = planes * i / threads, to = planes * (i + 1) / threads;
    try {
      helpers.emplace_back(copy_planes, std::cref(job), staging, from, to);
    } catch (...) {  // no thread to be had: this one does that share too
      copy_planes(job, staging, from, to);
    }
  }
  copy_planes(job, staging, 0, planes / threads);
  for (auto& t : helpers) t.join();
}

}  // namespace kvferry::detail
