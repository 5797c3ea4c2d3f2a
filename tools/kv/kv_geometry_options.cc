#include "kv/kv_geometry_options.h"

#include "common/cli_util.h"
#include "kv/kv_presets.h"

namespace kvferry::cli {

Result<KvGeometry> KvGeometryOptions::geometry() const {
  const KvModelPreset* preset = find_kv_model_preset(model);
  if (preset == nullptr) {
    return InvalidArgument("--model '" + model + "' is not a preset (presets: " + kv_model_preset_names() +
                           "); give --layers, --kv-heads, --head-dim, --block-tokens, --dtype on top of one");
  }
  KvGeometry g = preset->geometry;
  if (layers != 0) g.layers = layers;
  if (kv_heads != 0) g.kv_heads = kv_heads;
  if (head_dim != 0) g.head_dim = head_dim;
  if (block_tokens != 0) g.block_tokens = block_tokens;
  if (!dtype.empty() && !parse_kv_dtype(dtype, &g.dtype)) {
    return InvalidArgument("--dtype '" + dtype + "': expected bf16, fp16, fp8 or fp32");
  }
  return g;
}

Result<KvArrangement> KvGeometryOptions::arrangement() const {
  const KvModelPreset* preset = find_kv_model_preset(model);
  KvArrangement a = preset != nullptr ? preset->arrangement : KvArrangement::kVllmNhd;
  if (!layout.empty() && !parse_kv_arrangement(layout, &a)) {
    return InvalidArgument("--layout '" + layout +
                           "': expected vllm-nhd, vllm-hnd, flashinfer, sglang or mla");
  }
  return a;
}

Result<KvLayout> KvPoolOptions::layout() const {
  KVF_ASSIGN_OR_RETURN(KvGeometry g, geometry.geometry());
  KVF_ASSIGN_OR_RETURN(KvArrangement a, geometry.arrangement());
  std::uint32_t blocks = pool_blocks;
  if (blocks == 0) {
    const auto size = parse_byte_size(pool_size_text);
    if (!size) return InvalidArgument("--pool-size '" + pool_size_text + "': expected e.g. 4GiB, 512MiB");
    KVF_ASSIGN_OR_RETURN(KvLayout one, KvLayout::create(g, a, 1));
    const std::uint64_t per_block = one.block_bytes_all_layers();
    const std::uint64_t fitting = *size / per_block;
    if (fitting == 0) {
      return InvalidArgument("--pool-size " + pool_size_text +
                             " holds no block (one block of every layer is " + format_bytes(per_block) + ")");
    }
    blocks = fitting > 0xFFFFFFFFu ? 0xFFFFFFFFu : static_cast<std::uint32_t>(fitting);
  }
  return KvLayout::create(g, a, blocks);
}

void add_kv_geometry_options(CLI::App* command, KvGeometryOptions& o) {
  command->add_option("--model", o.model, "Model preset: " + kv_model_preset_names())->capture_default_str();
  command->add_option("--layers", o.layers, "Layers (overrides the preset)")->check(CLI::PositiveNumber);
  command->add_option("--kv-heads", o.kv_heads, "KV heads (overrides the preset)")
      ->check(CLI::PositiveNumber);
  command->add_option("--head-dim", o.head_dim, "Head dim, or MLA latent width (overrides the preset)")
      ->check(CLI::PositiveNumber);
  command->add_option("--block-tokens", o.block_tokens, "Tokens per block (overrides the preset)")
      ->check(CLI::PositiveNumber);
  command->add_option("--dtype", o.dtype, "bf16, fp16, fp8 or fp32 (overrides the preset)");
  command->add_option("--layout", o.layout,
                      "vllm-nhd, vllm-hnd, flashinfer, sglang or mla (default: the preset's)");
}

void add_kv_pool_options(CLI::App* command, KvPoolOptions& o) {
  add_kv_geometry_options(command, o.geometry);
  command->add_option("--pool-size", o.pool_size_text, "KV pool size, all layers: 4GiB, 512MiB")
      ->capture_default_str();
  command
      ->add_option("--pool-blocks", o.pool_blocks, "KV pool size in blocks per layer (overrides --pool-size)")
      ->check(CLI::PositiveNumber);
}

void add_kv_memory_options(CLI::App* command, KvMemoryOptions& o) {
  command
      ->add_option("--mem", o.mem,
                   "Memory of this process's pool: dram (host) or vram (GPU --device; needs a CUDA build "
                   "and a GPU, else exit 2). Independent of the peer's")
      ->check(CLI::IsMember({"dram", "vram"}))
      ->capture_default_str();
  command->add_option("--device", o.device, "With --mem vram: the GPU that holds the pool")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

}  // namespace kvferry::cli
