// kvferry/kv/kv_head_copy.h — gather a request's KV heads out of an engine's pool into
// one contiguous staging region, and scatter them back into another engine's pool.
//
// Contract
// - Staging layout: `[heads, layers, kv, tokens, head_dim]` of the pool's dtype, heads
//   outermost (kv = 2, K then V; 1 for MLA; `tokens` = the tokens copied, the request's
//   tokens [first_token, first_token + tokens) at staging tokens [0, tokens)). So any
//   head range of the staging is one contiguous byte range: a TP share (tp_mapping.h) is
//   one descriptor. `KvStagingShape` gives sizes and offsets.
// - Tokens are addressed through the request's block table: token t lives in block
//   `block_ids[t / block_tokens]`, slot `t % block_tokens`, with the pool's own
//   block_tokens. Gather and scatter each use their own pool's layout, so any pair of
//   arrangements (vllm-nhd, vllm-hnd, flashinfer, sglang, mla) and any pair of
//   block_tokens convert through the staging: gather with one, scatter with the other.
//   Chunked prefill: scatter each chunk with its `first_token`; it lands at those tokens.
// - Every byte of the staging range `[0, shape.bytes())` is written by a gather; every
//   pool byte of the selected (heads, tokens, all layers, K and V) is written by a scatter,
//   nothing else. Pool slots past the last token of a partly used block are untouched.
// - Memory: a dram pool copies on the CPU (dram staging only). A vram pool copies with a
//   CUDA kernel on the pool's device; its staging is device memory of the same GPU, or
//   pinned host memory (cudaHostAlloc / cudaHostRegister, e.g. a StagingSlots slot)
//   that the kernel reads or writes directly over the bus. Pageable host memory is refused.
//   A build without CUDA refuses vram with NotSupported. The staging is checked per call;
//   the pool's tensors are not (they are the engine's registered device memory).
// - The block ids a window touches must be distinct (a scatter into one slot twice
//   leaves either value there).
// - Threading: the functions are stateless and thread-safe; calls on disjoint memory may
//   run concurrently. The caller keeps `block_ids` alive for the call only (the GPU
//   variants copy them into the launch).
// - Blocking: `gather_kv_heads` / `scatter_kv_heads` return once every byte is in place
//   (vram: waited on a per-thread stream, at most `options.timeout`; on Timeout the copy
//   may still run and the caller must keep both memories until the device is idle). The
//   per-thread stream does not wait for the engine's streams: synchronise the stream that
//   wrote the pool first, or use the `enqueue_*` variants on that stream.
//   `enqueue_*` (vram only) order the copy on the caller's CUDA stream and return at once.
// - Errors (InvalidArgument unless said): head range outside the pool's kv_heads, a block
//   id outside the pool, too few block ids for the tokens, tokens 0, staging too small or
//   of the wrong kind, more than 2^32 staging rows; each message names the value.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>

#include "kvferry/kv/kv_layout.h"
#include "kvferry/kv/kv_pool.h"
#include "kvferry/kv/tp_mapping.h"
#include "kvferry/memory.h"
#include "kvferry/status.h"

namespace kvferry {

// The shape of a staging region, and where things sit in it.
struct KvStagingShape {
  std::uint32_t heads = 0;
  std::uint32_t layers = 0;
  std::uint32_t kv = 2;  // 1 for MLA
  std::uint64_t tokens = 0;
  std::uint32_t head_dim = 0;
  KvDtype dtype = KvDtype::kBf16;

  // The staging of `heads` heads of `layout`'s model over `tokens` tokens.
  static KvStagingShape of(const KvLayout& layout, std::uint32_t heads, std::uint64_t tokens);

  std::uint64_t row_bytes() const { return std::uint64_t{head_dim} * dtype_bytes(dtype); }
  // Bytes of one head: layers * kv * tokens * row_bytes().
  std::uint64_t head_bytes() const { return std::uint64_t{layers} * kv * tokens * row_bytes(); }
  std::uint64_t bytes() const { return head_bytes() * heads; }
  // Offset of heads [first, ...) — a share's first byte; its length is count * head_bytes().
  std::uint64_t head_offset(std::uint32_t head) const { return head_bytes() * head; }
  // Offset of the row (head, layer, kv, token): row_bytes() long.
  std::uint64_t row_offset(std::uint32_t head, std::uint32_t layer, std::uint32_t kv_part,
                           std::uint64_t token) const {
    return ((std::uint64_t{head} * layers + layer) * kv + kv_part) * tokens * row_bytes() +
           token * row_bytes();
  }
};

// Which tokens of a request: the request's block table and a token window of it.
struct KvTokenWindow {
  std::span<const std::uint32_t> block_ids;  // the whole request's blocks, in token order
  std::uint64_t first_token = 0;
  std::uint64_t tokens = 0;
};

// Where the staging lies: `kind` dram (host, pinned for vram pools) or vram (`device`).
struct KvStaging {
  std::uint64_t address = 0;
  std::uint64_t length = 0;
  MemoryKind kind = MemoryKind::kDram;
  std::uint32_t device = 0;
};

struct KvHeadCopyOptions {
  // vram, blocking calls: the longest wait for the kernel.
  std::chrono::milliseconds timeout{10000};
  // dram: CPU threads (0: decided by size and the cores present; 1: the calling thread).
  std::uint32_t threads = 0;
  // vram pool with pinned host staging: device memory of the pool's GPU to go through
  // (e.g. a vram StagingSlots slot; length 0: none, the kernel reaches host memory over
  // the bus). The kernel gathers (head, layer range) pieces of up to half of it while the
  // copy engine moves the previous piece to the host (scatter: the reverse), which keeps
  // the bus at copy-engine speed. Half of it must hold one layer of one head (kv x tokens
  // x head_dim x dtype bytes); ignored for other memory pairs.
  KvStaging device_scratch{0, 0, MemoryKind::kVram, 0};
};

// Pool heads `heads` (the pool's local numbering) of `window`'s tokens -> staging laid
// out as KvStagingShape::of(pool.layout(), heads.count, window.tokens).
Status gather_kv_heads(const KvPool& pool, const KvTokenWindow& window, HeadRange heads,
                       const KvStaging& staging, const KvHeadCopyOptions& options = {});
// The reverse: staging -> pool heads `heads` of `window`'s tokens.
Status scatter_kv_heads(const KvStaging& staging, const KvPool& pool, const KvTokenWindow& window,
                        HeadRange heads, const KvHeadCopyOptions& options = {});

// vram pools only: the same copies ordered on `cuda_stream` (a cudaStream_t of the pool's
// device; nullptr is the legacy default stream). Returns once launched; errors of the
// launch itself are returned, later faults surface on the stream.
// `options.device_scratch` applies (it must stay untouched until the stream passes the copy).
Status enqueue_gather_kv_heads(const KvPool& pool, const KvTokenWindow& window, HeadRange heads,
                               const KvStaging& staging, void* cuda_stream,
                               const KvHeadCopyOptions& options = {});
Status enqueue_scatter_kv_heads(const KvStaging& staging, const KvPool& pool, const KvTokenWindow& window,
                                HeadRange heads, void* cuda_stream, const KvHeadCopyOptions& options = {});

}  // namespace kvferry
