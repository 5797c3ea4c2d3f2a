// demo_options.h — `kvferry demo` and its hidden prefill role; the model geometry.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvferry/kvferry.h"

namespace kvferry::cli {

// The model whose KV cache the demo moves. Per layer one tensor cut into blocks of
// `block_tokens` tokens; a block holds K and V of every KV head together (the
// flashinfer arrangement, kv_layout.h), so one block of one layer is one segment.
struct DemoModel {
  const char* name;
  KvGeometry geometry;

  // The pool of `blocks` blocks per layer, on the library's layout.
  Result<KvLayout> layout(std::uint32_t blocks) const {
    return KvLayout::create(geometry, KvArrangement::kFlashInfer, blocks);
  }
  // Bytes of one block of one layer (2 * kv_heads * head_dim * block_tokens * dtype).
  std::uint64_t block_bytes() const {
    const Result<KvLayout> one = layout(1);
    return one.ok() ? one->block_bytes() : 0;
  }
};

// Mistral-Small-3.1 in vLLM's default 16-token blocks: 2 * 8 * 128 * 16 * 2 = 64 KiB per block.
inline const DemoModel kMistralSmall31{"Mistral-Small-3.1", KvGeometry{40, 8, 128, 16, KvDtype::kBf16}};

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
