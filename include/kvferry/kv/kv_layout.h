// kvferry/kv/kv_layout.h — a model's KV-cache geometry and its arrangement in memory.
//
// Contract
// - `KvGeometry` and `KvLayout` are plain immutable values: copy them freely and share
//   them between threads; every method is const and allocation-free.
// - `KvLayout::create` is the only way to make a layout; it validates the geometry (no
//   zero sizes, no 64-bit overflow, descriptor indices within 32 bits, the
//   arrangement's own constraints) and names the offending field on failure.
// - Engines speak of layers, blocks and heads; transports speak of bytes. A layout
//   translates: it says which tensors an engine registers (one registration per
//   tensor, never per block) and which contiguous byte runs ("segments") hold one
//   block of one layer.
//
// Vocabulary
// - tensor: one allocation the engine owns and registers. One per layer, except the
//   SGLang token-slot pool, which has two per layer (k[layer] and v[layer]).
// - lane: the blocks of one layer that share a segment shape, e.g. "the K half of
//   layer 3". A lane is an arithmetic progression over block ids: block b of lane l
//   starts at tensor(l) + lane_offset(l) + b * block_stride() and is segment_bytes()
//   long. Every descriptor kvferry builds for KV blocks is one (lane, block) segment.
// - Lanes are numbered layer-major: lane = layer * lanes_per_layer() + part, where part
//   is 0 (K, or the whole block) or 1 (V).
//
// Arrangements (shapes are per layer, outermost first; "2" is K then V):
// | arrangement | tensor shape                       | lanes/layer | segment          |
// | vllm-nhd    | [2, blocks, tokens, heads, dim]    | 2 (K, V)    | K or V of a block |
// | vllm-hnd    | [2, blocks, heads, tokens, dim]    | 2 (K, V)    | K or V of a block |
// | flashinfer  | [blocks, 2, tokens, heads, dim]    | 1           | K and V together  |
// | sglang      | k, v: [blocks*tokens slots, heads, dim] | 2 (k, v tensors) | a run of `tokens` slots |
// | mla         | [blocks, tokens, latent]           | 1           | the block's latents |
// HND keeps a block's K (and V) contiguous, so block transfers look like NHD's; the
// inner order matters for compatibility and for head slicing (a later feature that
// will add sub-block segments per head; nothing here precludes it).
// MLA has one latent per token: `kv_heads` must be 1 and `head_dim` is the latent
// width (e.g. DeepSeek-V3: kv_lora_rank 512 + rope 64 = 576).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "kvferry/status.h"

namespace kvferry {

enum class KvDtype : std::uint8_t { kBf16 = 0, kFp16 = 1, kFp8 = 2, kFp32 = 3 };

// Bytes of one element: 2, 2, 1, 4.
std::uint32_t dtype_bytes(KvDtype dtype) noexcept;
// "bf16", "fp16", "fp8", "fp32".
std::string_view to_string(KvDtype dtype) noexcept;
// Accepts the names above (and "bfloat16", "float16", "half", "float32", "float8",
// "fp8_e4m3", "fp8_e5m2"); false if unknown.
bool parse_kv_dtype(std::string_view text, KvDtype* out) noexcept;

// Numbers are part of the "kv.pool" metadata encoding: never renumber, only append.
enum class KvArrangement : std::uint8_t {
  kVllmNhd = 0,
  kVllmHnd = 1,
  kFlashInfer = 2,
  kSglangTokenSlots = 3,
  kMla = 4,
};

// "vllm-nhd", "vllm-hnd", "flashinfer", "sglang", "mla".
std::string_view to_string(KvArrangement arrangement) noexcept;
// Accepts the names above (and "nhd", "hnd", "vllm"); false if unknown.
bool parse_kv_arrangement(std::string_view text, KvArrangement* out) noexcept;

// What the model fixes, independent of how many blocks a pool holds.
struct KvGeometry {
  std::uint32_t layers = 0;
  std::uint32_t kv_heads = 0;
  std::uint32_t head_dim = 0;  // the latent width for MLA
  std::uint32_t block_tokens = 0;
  KvDtype dtype = KvDtype::kBf16;

  friend bool operator==(const KvGeometry&, const KvGeometry&) = default;
};

class KvLayout {
 public:
  // Validates; `blocks` is the pool size in blocks per layer (SGLang: slots / tokens).
  static Result<KvLayout> create(const KvGeometry& geometry, KvArrangement arrangement, std::uint32_t blocks);

  const KvGeometry& geometry() const { return geometry_; }
  KvArrangement arrangement() const { return arrangement_; }
  std::uint32_t blocks() const { return blocks_; }

  // kv_factor * kv_heads * head_dim * block_tokens * dtype_bytes,
  // kv_factor = 2 (K and V), or 1 for MLA. Bytes of one block of one layer.
  std::uint64_t block_bytes() const { return block_bytes_; }
  // Bytes of one block of one layer in all tensors: block_bytes() * layers.
  std::uint64_t block_bytes_all_layers() const { return block_bytes_ * geometry_.layers; }
  // Blocks a prompt of `tokens` tokens fills (the last one possibly partly).
  std::uint32_t blocks_for_tokens(std::uint64_t tokens) const;

  // Registrations.
  std::uint32_t tensor_count() const { return tensor_count_; }
  std::uint64_t tensor_bytes() const { return tensor_bytes_; }
  std::uint64_t pool_bytes() const { return tensor_bytes_ * tensor_count_; }

  // Segments.
  std::uint32_t lanes_per_layer() const { return lanes_per_layer_; }
  std::uint32_t lane_count() const { return lanes_per_layer_ * geometry_.layers; }
  std::uint32_t layer_of_lane(std::uint32_t lane) const { return lane / lanes_per_layer_; }
  std::uint32_t tensor_of_lane(std::uint32_t lane) const;
  // Offset of block 0 of `lane` inside its tensor.
  std::uint64_t lane_offset(std::uint32_t lane) const;
  std::uint64_t block_stride() const { return block_stride_; }
  std::uint64_t segment_bytes() const { return segment_bytes_; }
  // Offset inside tensor_of_lane(lane) of block `block` of `lane`.
  std::uint64_t segment_offset(std::uint32_t lane, std::uint32_t block) const {
    return lane_offset(lane) + std::uint64_t{block} * block_stride_;
  }
  // The index of (lane, block) in KvPool::block_descriptors(): lane * blocks + block.
  std::uint32_t descriptor_index(std::uint32_t lane, std::uint32_t block) const {
    return lane * blocks_ + block;
  }
  std::uint32_t descriptor_count() const { return lane_count() * blocks_; }

  // "40 layers x 8 KV heads x dim 128, 16 tokens/block, bf16, vllm-nhd, 1638 blocks".
  std::string describe() const;

 private:
  KvLayout() = default;

  KvGeometry geometry_;
  KvArrangement arrangement_ = KvArrangement::kVllmNhd;
  std::uint32_t blocks_ = 0;
  std::uint32_t tensor_count_ = 0;
  std::uint32_t lanes_per_layer_ = 0;
  std::uint64_t block_bytes_ = 0;
  std::uint64_t tensor_bytes_ = 0;
  std::uint64_t block_stride_ = 0;
  std::uint64_t segment_bytes_ = 0;
};

}  // namespace kvferry
