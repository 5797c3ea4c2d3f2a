#include "kvferry/kv/kv_layout.h"

#include <limits>

namespace kvferry {
namespace {

// Every product below is checked: a geometry typed by hand must fail clearly, never wrap.
bool checked_multiply(std::uint64_t a, std::uint64_t b, std::uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}

Status check_positive(std::uint64_t value, const char* field) {
  if (value == 0) return InvalidArgument(std::string("kv layout: ") + field + " must be positive");
  return Status::Ok();
}

// K and V live in separate lanes (and, for SGLang, separate tensors).
bool splits_k_and_v(KvArrangement a) {
  return a == KvArrangement::kVllmNhd || a == KvArrangement::kVllmHnd ||
         a == KvArrangement::kSglangTokenSlots;
}

}  // namespace

Result<KvLayout> KvLayout::create(const KvGeometry& g, KvArrangement arrangement, std::uint32_t blocks) {
  KVF_RETURN_IF_ERROR(check_positive(g.layers, "layers"));
  KVF_RETURN_IF_ERROR(check_positive(g.kv_heads, "kv_heads"));
  KVF_RETURN_IF_ERROR(check_positive(g.head_dim, "head_dim"));
  KVF_RETURN_IF_ERROR(check_positive(g.block_tokens, "block_tokens"));
  KVF_RETURN_IF_ERROR(check_positive(blocks, "blocks"));
  if (to_string(g.dtype).empty()) return InvalidArgument("kv layout: unknown dtype");
  if (to_string(arrangement).empty()) return InvalidArgument("kv layout: unknown arrangement");
  if (arrangement == KvArrangement::kMla && g.kv_heads != 1) {
    return InvalidArgument("kv layout: mla holds one latent per token: kv_heads must be 1 (got " +
                           std::to_string(g.kv_heads) + "); head_dim is the latent width");
  }

  KvLayout layout;
  layout.geometry_ = g;
  layout.arrangement_ = arrangement;
  layout.blocks_ = blocks;
  const std::uint64_t kv_factor = arrangement == KvArrangement::kMla ? 1 : 2;
  std::uint64_t bytes = kv_factor;
  for (std::uint64_t factor : {std::uint64_t{g.kv_heads}, std::uint64_t{g.head_dim},
                               std::uint64_t{g.block_tokens}, std::uint64_t{dtype_bytes(g.dtype)}}) {
    if (!checked_multiply(bytes, factor, &bytes))
      return InvalidArgument("kv layout: block size overflows 64 bits");
  }
  layout.block_bytes_ = bytes;
  const bool split = splits_k_and_v(arrangement);
  layout.lanes_per_layer_ = split ? 2 : 1;
  layout.segment_bytes_ = split ? bytes / 2 : bytes;
  layout.block_stride_ = layout.segment_bytes_;
  const bool tensor_per_lane = arrangement == KvArrangement::kSglangTokenSlots;
  layout.tensor_count_ = tensor_per_lane ? 2 * g.layers : g.layers;
  const std::uint64_t blocks_per_tensor =
      tensor_per_lane ? blocks : std::uint64_t{blocks} * layout.lanes_per_layer_;
  if (2 * std::uint64_t{g.layers} > std::numeric_limits<std::uint32_t>::max() ||
      std::uint64_t{layout.lanes_per_layer_} * g.layers * blocks >
          std::numeric_limits<std::uint32_t>::max()) {
    return InvalidArgument("kv layout: layers x lanes x blocks exceeds 32-bit descriptor indices");
  }
  std::uint64_t pool = 0;
  if (!checked_multiply(blocks_per_tensor, layout.segment_bytes_, &layout.tensor_bytes_) ||
      !checked_multiply(layout.tensor_bytes_, layout.tensor_count_, &pool)) {
    return InvalidArgument("kv layout: pool size overflows 64 bits");
  }
  return layout;
}

std::uint32_t KvLayout::blocks_for_tokens(std::uint64_t tokens) const {
  const std::uint64_t blocks = (tokens + geometry_.block_tokens - 1) / geometry_.block_tokens;
  return blocks > std::numeric_limits<std::uint32_t>::max() ? std::numeric_limits<std::uint32_t>::max()
                                                            : static_cast<std::uint32_t>(blocks);
}

std::uint32_t KvLayout::tensor_of_lane(std::uint32_t lane) const {
  return arrangement_ == KvArrangement::kSglangTokenSlots ? lane : lane / lanes_per_layer_;
}

std::uint64_t KvLayout::lane_offset(std::uint32_t lane) const {
  // NHD / HND: the V half follows all K blocks of the layer's tensor.
  if (arrangement_ == KvArrangement::kVllmNhd || arrangement_ == KvArrangement::kVllmHnd) {
    return std::uint64_t{lane % 2} * blocks_ * segment_bytes_;
  }
  return 0;
}

std::string KvLayout::describe() const {
  std::string text = std::to_string(geometry_.layers) + " layers x ";
  if (arrangement_ == KvArrangement::kMla) {
    text += "latent " + std::to_string(geometry_.head_dim);
  } else {
    text += std::to_string(geometry_.kv_heads) + " KV heads x dim " + std::to_string(geometry_.head_dim);
  }
  return text + ", " + std::to_string(geometry_.block_tokens) + " tokens/block, " +
         std::string(to_string(geometry_.dtype)) + ", " + std::string(to_string(arrangement_)) + ", " +
         std::to_string(blocks_) + " blocks";
}

}  // namespace kvferry
