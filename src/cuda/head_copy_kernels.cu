#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "cuda/copy_kernels.h"
#include "cuda/head_copy_kernels.h"

namespace kvferry::detail::cuda {
namespace {

constexpr unsigned kThreads = 256;
constexpr unsigned kUnroll = 4;  // vectors loaded per thread before the first store
constexpr std::uint32_t kMaxGridY = 65535;

struct HeadCopyParams {
  HeadCopyPlan plan;
  std::uint64_t staging;
  std::uint64_t t_begin;     // window tokens [t_begin, t_begin + launch_tokens) of this launch
  std::uint32_t launch_tokens;
  std::uint32_t first_slot;  // slot of token t_begin counted from block ids[0]'s first slot
  std::uint32_t gather;
  std::uint32_t units_per_row;
  std::uint64_t tensors[kHeadCopyMaxTensors];
  std::uint32_t ids[kHeadCopyMaxIds];
};
static_assert(sizeof(HeadCopyParams) <= 32000, "kernel parameters are limited to 32764 bytes");

// grid.y walks planes (staging head, layer, kv); within a plane the launch's tokens are
// one contiguous staging range of launch_tokens rows, walked by grid.x with every thread
// holding kUnroll vectors in flight. Staging accesses are coalesced across the warp
// (consecutive threads, consecutive vectors); pool accesses are coalesced within a row (a
// head_dim vector) and jump between rows by the arrangement's token stride. In-launch
// indices fit 32 bits (launch_head_copy sizes launches so).
template <typename Unit>
__global__ void __launch_bounds__(kThreads) head_copy_kernel(const __grid_constant__ HeadCopyParams p) {
  const HeadCopyPlan& plan = p.plan;
  const std::uint32_t planes = plan.heads * plan.layers * plan.kv_parts;
  const std::uint32_t upr = p.units_per_row;
  const std::uint32_t units = p.launch_tokens * upr;
  const std::uint32_t stride = gridDim.x * kThreads;
  for (std::uint32_t q = blockIdx.y; q < planes; q += gridDim.y) {
    const std::uint32_t kv = q % plan.kv_parts;
    const std::uint32_t layer = (q / plan.kv_parts) % plan.layers;
    const std::uint32_t h = q / (plan.kv_parts * plan.layers);
    const std::uint64_t pool_plane = p.tensors[plan.tensor_index(layer, kv)] + kv * plan.kv_stride +
                                     std::uint64_t{plan.head_first + h} * plan.head_stride;
    Unit* const stage_plane = reinterpret_cast<Unit*>(p.staging + plan.staging_row(h, layer, kv, p.t_begin));
    for (std::uint32_t base = blockIdx.x * kThreads + threadIdx.x; base < units; base += stride * kUnroll) {
      Unit v[kUnroll];
      Unit* dst[kUnroll];
#pragma unroll
      for (unsigned u = 0; u < kUnroll; ++u) {
        const std::uint32_t j = base + u * stride;
        dst[u] = nullptr;
        if (j >= units) continue;
        const std::uint32_t row = j / upr;  // launch token
        const std::uint32_t col = j - row * upr;
        const std::uint32_t s = p.first_slot + row;
        const std::uint32_t block = s / plan.block_tokens;
        const std::uint32_t slot = s - block * plan.block_tokens;
        Unit* pool = reinterpret_cast<Unit*>(pool_plane + p.ids[block] * plan.block_stride +
                                             slot * plan.token_stride) + col;
        Unit* stage = stage_plane + j;
        if (p.gather) {
          v[u] = __ldcs(pool);
          dst[u] = stage;
        } else {
          v[u] = __ldcs(stage);
          dst[u] = pool;
        }
      }
#pragma unroll
      for (unsigned u = 0; u < kUnroll; ++u)
        if (dst[u]) __stcs(dst[u], v[u]);
    }
  }
}

// A grid of as many blocks as the SMs hold at once (a persistent grid: no tail of
// waiting blocks), spread over the planes; at most what the plane's tokens can use.
template <typename Unit>
void launch(const HeadCopyParams& p, std::uint32_t sms, std::uint32_t planes, std::uint64_t per_plane,
            cudaStream_t stream) {
  int resident = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, head_copy_kernel<Unit>, kThreads, 0) != cudaSuccess ||
      resident <= 0)
    resident = 4;
  const std::uint64_t want_x =
      std::max<std::uint64_t>(1, (std::uint64_t{sms} * static_cast<std::uint64_t>(resident) + planes - 1) / planes);
  const dim3 grid(static_cast<unsigned>(std::min(per_plane, want_x)), std::min(planes, kMaxGridY));
  head_copy_kernel<Unit><<<grid, kThreads, 0, stream>>>(p);
}

}  // namespace

std::uint32_t head_copy_unit(const HeadCopyPlan& plan, const std::uint64_t* tensors, std::uint32_t tensor_count,
                             std::uint64_t staging) {
  std::uint64_t bits = plan.row_bytes | plan.kv_stride | plan.block_stride | plan.token_stride |
                       plan.head_stride | staging;
  for (std::uint32_t i = 0; i < tensor_count; ++i) bits |= tensors[i];
  for (std::uint32_t unit = 16; unit > 1; unit /= 2)
    if ((bits & (unit - 1)) == 0) return unit;
  return 1;
}

std::vector<HeadCopyLaunch> head_copy_launches(const HeadCopyPlan& plan, std::uint64_t block_count,
                                              std::uint64_t units_per_row) {
  std::vector<HeadCopyLaunch> out;
  const std::uint64_t bt = plan.block_tokens;
  const std::uint64_t max_tokens = std::max<std::uint64_t>(1, (1ull << 31) / units_per_row);
  for (std::uint64_t t = 0; t < plan.tokens;) {
    const std::uint64_t slot = plan.first_token + t;  // counted from block_ids[0]'s first slot
    const std::uint64_t first_block = slot / bt;
    if (first_block >= block_count) return {};  // too few blocks: the caller validated this
    const std::uint64_t ids = std::min<std::uint64_t>(kHeadCopyMaxIds, block_count - first_block);
    const std::uint64_t n = std::min({plan.tokens - t, max_tokens, (first_block + ids) * bt - slot});
    const std::uint64_t used = (slot + n - 1) / bt - first_block + 1;
    out.push_back(HeadCopyLaunch{t, n, first_block, used, static_cast<std::uint32_t>(slot - first_block * bt)});
    t += n;
  }
  return out;
}

int launch_head_copy(const HeadCopyPlan& plan, bool gather, const std::uint64_t* tensors,
                     std::uint32_t tensor_count, const std::uint32_t* block_ids, std::uint64_t block_count,
                     std::uint64_t staging, void* stream) {
  const std::uint32_t unit = head_copy_unit(plan, tensors, tensor_count, staging);
  const std::uint64_t upr = plan.row_bytes / unit;
  if (tensor_count > kHeadCopyMaxTensors || plan.tokens == 0 || block_count == 0 ||
      plan.block_tokens > kHeadCopyMaxBlockTokens || upr == 0 || upr > kHeadCopyMaxRowUnits)
    return static_cast<int>(cudaErrorInvalidValue);
  const std::vector<HeadCopyLaunch> launches = head_copy_launches(plan, block_count, upr);
  if (launches.empty()) return static_cast<int>(cudaErrorInvalidValue);
  auto p = std::make_unique<HeadCopyParams>();  // ~29 KiB: not on the caller's stack
  p->plan = plan;
  p->staging = staging;
  p->gather = gather ? 1 : 0;
  p->units_per_row = static_cast<std::uint32_t>(upr);
  std::copy(tensors, tensors + tensor_count, p->tensors);
  int device = 0;
  cudaGetDevice(&device);
  std::uint32_t sms = multiprocessor_count(device);
  if (sms == 0) sms = 132;
  const std::uint32_t planes = plan.heads * plan.layers * plan.kv_parts;
  auto s = static_cast<cudaStream_t>(stream);
  for (const HeadCopyLaunch& l : launches) {
    std::copy(block_ids + l.first_block, block_ids + l.first_block + l.blocks, p->ids);
    p->t_begin = l.t_begin;
    p->launch_tokens = static_cast<std::uint32_t>(l.tokens);
    p->first_slot = l.first_slot;
    const std::uint64_t per_plane = (l.tokens * upr + kThreads * kUnroll - 1) / (kThreads * kUnroll);
    switch (unit) {
      case 16: launch<int4>(*p, sms, planes, per_plane, s); break;
      case 8: launch<int2>(*p, sms, planes, per_plane, s); break;
      case 4: launch<int>(*p, sms, planes, per_plane, s); break;
      case 2: launch<short>(*p, sms, planes, per_plane, s); break;
      default: launch<char>(*p, sms, planes, per_plane, s); break;
    }
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return static_cast<int>(e);
  }
  return 0;
}

}  // namespace kvferry::detail::cuda
