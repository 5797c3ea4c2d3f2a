// demo_options.h — `kvferry demo` and its hidden prefill role; the model geometry.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvferry::cli {

// The KV cache geometry of one model (seed 001): per layer one tensor cut into blocks
// of `block_tokens` tokens; a block holds K and V of every KV head.
struct ModelKvGeometry {
  const char* name;
  std::uint32_t layers;
  std::uint32_t kv_heads;
  std::uint32_t head_dim;
  std::uint32_t block_tokens;
  std::uint32_t dtype_bytes;

  constexpr std::uint64_t block_bytes() const {
    return std::uint64_t{2} * kv_heads * head_dim * block_tokens * dtype_bytes;
  }
};

// Mistral-Small-3.1 under vLLM's defaults: 2 * 8 * 128 * 16 * 2 = 64 KiB per block.
inline constexpr ModelKvGeometry kMistralSmall31{"Mistral-Small-3.1", 40, 8, 128, 16, 2};

// The prefill pool's contents: block b of layer l holds pattern (kDemoSeed, l, b).
inline constexpr std::uint64_t kDemoSeed = 0x4B56464552525931ull;  // "KVFERRY1"
inline constexpr const char* kDemoDoneMessage = "done";

struct DemoOptions {
  std::vector<std::string> backends;  // empty: every backend usable across processes
  int tokens = 4096;
  std::uint32_t blocks_per_layer = 512;
  bool json = false;
  // --mem vram: both pools on GPUs, the prefill's on `device`, the decode's on
  // `peer_device` (-1: the GPU after `device` if there is one, else the same).
  std::string mem = "dram";
  int device = 0;
  int peer_device = -1;
};

struct DemoPrefillOptions {
  std::string backend = "tcp";
  std::uint32_t blocks_per_layer = 512;
  std::string mem = "dram";
  int device = 0;  // with mem vram
  int report_fd = -1;
  int timeout_s = 120;  // gives up waiting for the decode's "done" after this
};

}  // namespace kvferry::cli
