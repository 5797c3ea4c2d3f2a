// The arithmetic of one head gather/scatter, shared by the CPU copy and the CUDA kernels
// (plain C++17, no library types: nvcc compiles it too).
//
// Every arrangement of kv_layout.h places the row (layer, kv, block, slot, head) — one
// head_dim vector — at
//   tensors[layer * tensors_per_layer + kv * (tensors_per_layer - 1)]
//     + kv * kv_stride + block * block_stride + slot * token_stride + head * head_stride
// and the staging row (head - head_first, layer - layer_first, kv, token - first_token) at
//   (((h * layers + l) * kv_parts + kv) * tokens + t) * row_bytes.
// The public calls copy every layer (layer_first 0); the pipeline through device scratch
// (head_copy_chunks.h) copies (head, layer range) pieces.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define KVF_HOST_DEVICE __host__ __device__
#else
#define KVF_HOST_DEVICE
#endif

namespace kvferry::detail {

struct HeadCopyPlan {
  std::uint64_t kv_stride = 0;
  std::uint64_t block_stride = 0;
  std::uint64_t token_stride = 0;
  std::uint64_t head_stride = 0;
  std::uint64_t row_bytes = 0;          // head_dim * dtype bytes
  std::uint64_t first_token = 0;        // of the window, in the request
  std::uint64_t tokens = 0;             // of the window (the staging's token dimension)
  std::uint32_t tensors_per_layer = 1;  // 2: separate K and V tensors (sglang)
  std::uint32_t block_tokens = 0;
  std::uint32_t layer_first = 0;  // pool layer of staging layer 0
  std::uint32_t layers = 0;       // staging layers
  std::uint32_t kv_parts = 2;     // 1 for MLA
  std::uint32_t head_first = 0;   // pool-local head of staging head 0
  std::uint32_t heads = 0;        // staging heads

  // `layer` counts from layer_first.
  KVF_HOST_DEVICE std::uint32_t tensor_index(std::uint32_t layer, std::uint32_t kv) const {
    return (layer_first + layer) * tensors_per_layer + kv * (tensors_per_layer - 1);
  }
  KVF_HOST_DEVICE std::uint64_t staging_row(std::uint32_t h, std::uint32_t layer, std::uint32_t kv,
                                            std::uint64_t t) const {
    return (((std::uint64_t{h} * layers + layer) * kv_parts + kv) * tokens + t) * row_bytes;
  }
  KVF_HOST_DEVICE std::uint64_t rows() const { return std::uint64_t{heads} * layers * kv_parts * tokens; }
};

}  // namespace kvferry::detail
