// The head gather/scatter kernels (kvferry/kv/kv_head_copy.h on vram pools).
//
// Plain C++ header (no CUDA types): the stream is passed as void*. Stateless and
// allocation-free: the block table and the tensor addresses travel in the launch's
// parameters (up to kHeadCopyMaxIds block ids per launch; longer windows take several
// launches), so nothing the caller owns is read after the call returns and nothing needs
// freeing when the copy completes.
#pragma once

#include <cstdint>
#include <vector>

#include "kv/tp/head_copy_plan.h"

namespace kvferry::detail::cuda {

inline constexpr std::uint32_t kHeadCopyMaxTensors = 512;  // sglang: 2 per layer, so 256 layers
inline constexpr std::uint32_t kHeadCopyMaxIds = 6144;     // keeps the parameters under 32 KiB
// In-launch indices are 32-bit: block_tokens and the vectors of a row are bounded (far
// above any model's: a row of 2^20 vectors is a head_dim of 4 million bf16 elements).
inline constexpr std::uint32_t kHeadCopyMaxBlockTokens = 1u << 24;
inline constexpr std::uint32_t kHeadCopyMaxRowUnits = 1u << 20;

// Launches the copy of `plan` between the pool (`tensors`, `tensor_count` <=
// kHeadCopyMaxTensors device addresses) and the staging at `staging` (device memory of
// the current device or mapped pinned host memory), for the window whose blocks are
// `block_ids[0, block_count)`. The current device must be the pool's. Returns the
// cudaError_t of the launches as an int (0 = success).
int launch_head_copy(const HeadCopyPlan& plan, bool gather, const std::uint64_t* tensors,
                     std::uint32_t tensor_count, const std::uint32_t* block_ids, std::uint64_t block_count,
                     std::uint64_t staging, void* stream);

// One launch: window tokens [t_begin, t_begin + tokens), whose slots lie in the window's
// blocks [first_block, first_block + blocks); token t_begin at slot first_slot of
// block_ids[first_block].
struct HeadCopyLaunch {
  std::uint64_t t_begin = 0;
  std::uint64_t tokens = 0;
  std::uint64_t first_block = 0;
  std::uint64_t blocks = 0;
  std::uint32_t first_slot = 0;
};

// The launches covering the plan's window in order, each within kHeadCopyMaxIds blocks and
// 2^31 vectors of `units_per_row` per token. Empty when `block_count` is too small.
std::vector<HeadCopyLaunch> head_copy_launches(const HeadCopyPlan& plan, std::uint64_t block_count,
                                               std::uint64_t units_per_row);

// The vector width the kernels use for this plan and these addresses (16, 8, 4, 2 or 1
// bytes): the widest that divides the row, every stride and every base address.
std::uint32_t head_copy_unit(const HeadCopyPlan& plan, const std::uint64_t* tensors,
                             std::uint32_t tensor_count, std::uint64_t staging);

}  // namespace kvferry::detail::cuda
