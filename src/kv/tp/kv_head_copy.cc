// Validation and dispatch of the head gather/scatter: dram pools copy on the CPU, vram
// pools with the CUDA kernels.
#include "kvferry/kv/kv_head_copy.h"

#include <limits>
#include <string>

#include "kv/tp/head_copy_internal.h"

namespace kvferry {
namespace detail {
namespace {

const char* name_of(HeadCopyDirection d) { return d == HeadCopyDirection::kGather ? "gather" : "scatter"; }

// The strides of kv_layout.h's arrangements, per head_copy_plan.h's formula.
void set_strides(const KvLayout& layout, HeadCopyPlan* p) {
  const KvGeometry& g = layout.geometry();
  const std::uint64_t row = p->row_bytes, H = g.kv_heads, T = g.block_tokens, B = layout.blocks();
  const std::uint64_t block = T * H * row;  // one block of one K or V part
  p->tensors_per_layer = 1;
  p->kv_stride = B * block;
  p->block_stride = block;
  p->token_stride = H * row;
  p->head_stride = row;
  switch (layout.arrangement()) {
    case KvArrangement::kVllmNhd: break;
    case KvArrangement::kVllmHnd:
      p->token_stride = row;
      p->head_stride = T * row;
      break;
    case KvArrangement::kFlashInfer:
      p->kv_stride = block;
      p->block_stride = 2 * block;
      break;
    case KvArrangement::kSglangTokenSlots:
      p->tensors_per_layer = 2;
      p->kv_stride = 0;
      break;
    case KvArrangement::kMla: p->kv_stride = 0; break;
  }
}

}  // namespace

Result<HeadCopyJob> make_head_copy_job(HeadCopyDirection direction, const KvPool& pool,
                                       const KvTokenWindow& window, HeadRange heads,
                                       const KvStaging& staging) {
  const std::string what = std::string(name_of(direction)) + "_kv_heads: ";
  const KvLayout& layout = pool.layout();
  const KvGeometry& g = layout.geometry();
  if (heads.count == 0) return InvalidArgument(what + "the head range is empty");
  if (std::uint64_t{heads.first} + heads.count > g.kv_heads) {
    return InvalidArgument(what + "heads [" + std::to_string(heads.first) + ", " +
                           std::to_string(std::uint64_t{heads.first} + heads.count) +
                           ") lie outside the pool's " + std::to_string(g.kv_heads) + " KV heads");
  }
  if (window.tokens == 0) return InvalidArgument(what + "no tokens to copy");
  if (window.first_token > std::numeric_limits<std::uint64_t>::max() - window.tokens)
    return InvalidArgument(what + "first_token + tokens overflows");
  const std::uint64_t bt = g.block_tokens;
  const std::uint64_t first_block = window.first_token / bt;
  const std::uint64_t end_block = (window.first_token + window.tokens + bt - 1) / bt;
  if (end_block > window.block_ids.size()) {
    return InvalidArgument(what + "tokens [" + std::to_string(window.first_token) + ", " +
                           std::to_string(window.first_token + window.tokens) + ") need " +
                           std::to_string(end_block) + " blocks of " + std::to_string(bt) +
                           " tokens but the block table has " + std::to_string(window.block_ids.size()));
  }
  for (std::uint64_t i = first_block; i < end_block; ++i) {
    if (window.block_ids[i] >= layout.blocks()) {
      return InvalidArgument(what + "block id " + std::to_string(window.block_ids[i]) + " (entry " +
                             std::to_string(i) + " of the block table) is outside the pool's " +
                             std::to_string(layout.blocks()) + " blocks");
    }
  }
  const KvStagingShape shape = KvStagingShape::of(layout, heads.count, window.tokens);
  // Rows (one head_dim vector each) are counted in 32 bits by the kernels.
  std::uint64_t rows = std::uint64_t{heads.count} * g.layers * shape.kv;
  if (__builtin_mul_overflow(rows, window.tokens, &rows) ||
      rows > std::numeric_limits<std::uint32_t>::max()) {
    return InvalidArgument(what + std::to_string(heads.count) + " heads x " + std::to_string(window.tokens) +
                           " tokens exceed 2^32 staging rows: copy fewer tokens per call");
  }
  if (staging.length < shape.bytes()) {
    return InvalidArgument(what + "the staging holds " + std::to_string(staging.length) + " bytes but " +
                           std::to_string(heads.count) + " heads x " + std::to_string(window.tokens) +
                           " tokens need " + std::to_string(shape.bytes()));
  }
  if (staging.address == 0) return InvalidArgument(what + "the staging address is null");

  HeadCopyJob job;
  job.direction = direction;
  HeadCopyPlan& p = job.plan;
  p.row_bytes = shape.row_bytes();
  set_strides(layout, &p);
  p.first_token = window.first_token - first_block * bt;
  p.tokens = window.tokens;
  p.block_tokens = g.block_tokens;
  p.layers = g.layers;
  p.kv_parts = shape.kv;
  p.head_first = heads.first;
  p.heads = heads.count;
  job.block_ids = window.block_ids.subspan(first_block, end_block - first_block);
  job.tensors = pool.tensor_addresses();
  return job;
}

}  // namespace detail

KvStagingShape KvStagingShape::of(const KvLayout& layout, std::uint32_t heads, std::uint64_t tokens) {
  KvStagingShape s;
  s.heads = heads;
  s.layers = layout.geometry().layers;
  s.kv = layout.arrangement() == KvArrangement::kMla ? 1 : 2;
  s.tokens = tokens;
  s.head_dim = layout.geometry().head_dim;
  s.dtype = layout.geometry().dtype;
  return s;
}

namespace {

using detail::HeadCopyDirection;

Status run(HeadCopyDirection direction, const KvPool& pool, const KvTokenWindow& window, HeadRange heads,
           const KvStaging& staging, const KvHeadCopyOptions& options, void* stream, bool wait) {
  KVF_ASSIGN_OR_RETURN(detail::HeadCopyJob job,
                       detail::make_head_copy_job(direction, pool, window, heads, staging));
  const std::string what =
      std::string(direction == HeadCopyDirection::kGather ? "gather" : "scatter") + "_kv_heads: ";
  switch (pool.kind()) {
    case MemoryKind::kDram:
      if (!wait) return InvalidArgument(what + "a dram pool copies on the CPU: use the blocking call");
      if (staging.kind != MemoryKind::kDram) {
        return InvalidArgument(what + "a dram pool copies on the CPU, so its staging must be dram (got " +
                               std::string(to_string(staging.kind)) + ")");
      }
      detail::cpu_head_copy(job, reinterpret_cast<std::uint8_t*>(staging.address), options.threads);
      return Status::Ok();
    case MemoryKind::kVram:
      if (staging.kind == MemoryKind::kVram && staging.device != pool.device()) {
        return InvalidArgument(what + "the pool is on GPU " + std::to_string(pool.device()) +
                               " but the staging on GPU " + std::to_string(staging.device));
      }
      if (staging.kind != MemoryKind::kVram && staging.kind != MemoryKind::kDram) {
        return InvalidArgument(what + "staging must be vram or pinned dram (got " +
                               std::string(to_string(staging.kind)) + ")");
      }
      if (options.device_scratch.length > 0 && staging.kind == MemoryKind::kDram) {
        const KvStaging& scratch = options.device_scratch;
        if (scratch.kind != MemoryKind::kVram || scratch.device != pool.device()) {
          return InvalidArgument(what + "device_scratch must be vram of the pool's GPU " +
                                 std::to_string(pool.device()));
        }
        return detail::device_head_copy(job, pool, staging, &scratch, stream, wait, options.timeout);
      }
      return detail::device_head_copy(job, pool, staging, nullptr, stream, wait, options.timeout);
    default:
      return InvalidArgument(what + "a " + std::string(to_string(pool.kind())) +
                             " pool cannot be gathered or scattered (dram or vram only)");
  }
}

}  // namespace

Status gather_kv_heads(const KvPool& pool, const KvTokenWindow& window, HeadRange heads,
                       const KvStaging& staging, const KvHeadCopyOptions& options) {
  return run(HeadCopyDirection::kGather, pool, window, heads, staging, options, nullptr, true);
}

Status scatter_kv_heads(const KvStaging& staging, const KvPool& pool, const KvTokenWindow& window,
                        HeadRange heads, const KvHeadCopyOptions& options) {
  return run(HeadCopyDirection::kScatter, pool, window, heads, staging, options, nullptr, true);
}

Status enqueue_gather_kv_heads(const KvPool& pool, const KvTokenWindow& window, HeadRange heads,
                               const KvStaging& staging, void* cuda_stream,
                               const KvHeadCopyOptions& options) {
  if (pool.kind() != MemoryKind::kVram)
    return InvalidArgument("enqueue_gather_kv_heads: the pool is not vram");
  return run(HeadCopyDirection::kGather, pool, window, heads, staging, options, cuda_stream, false);
}

Status enqueue_scatter_kv_heads(const KvStaging& staging, const KvPool& pool, const KvTokenWindow& window,
                                HeadRange heads, void* cuda_stream, const KvHeadCopyOptions& options) {
  if (pool.kind() != MemoryKind::kVram)
    return InvalidArgument("enqueue_scatter_kv_heads: the pool is not vram");
  return run(HeadCopyDirection::kScatter, pool, window, heads, staging, options, cuda_stream, false);
}

}  // namespace kvferry
