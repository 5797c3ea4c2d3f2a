#include "kv/offload_plan.h"

#include <xxhash.h>

#include <memory>
#include <string>

namespace kvferry {

KvPoolView offload_view(const KvPool& pool) {
  KvPoolView v;
  v.kind = pool.kind();
  v.device = pool.device();
  v.blocks = pool.layout().blocks();
  v.segments = [pool](std::uint32_t block, std::vector<Descriptor>& out) {
    const KvLayout& l = pool.layout();
    for (std::uint32_t lane = 0; lane < l.lane_count(); ++lane)
      out.push_back(Descriptor{pool.segment_address(lane, block), l.segment_bytes(), pool.device()});
  };
  const KvGeometry& g = pool.layout().geometry();
  v.geometry = "layers=" + std::to_string(g.layers) + " kv_heads=" + std::to_string(g.kv_heads) +
               " head_dim=" + std::to_string(g.head_dim) + " block_tokens=" + std::to_string(g.block_tokens) +
               " dtype=" + std::string(to_string(g.dtype)) +
               " arrangement=" + std::string(to_string(pool.layout().arrangement()));
  return v;
}

namespace detail {

Result<std::vector<std::uint64_t>> block_shape(const KvPoolView& pool) {
  if (!pool.segments || pool.blocks == 0) return InvalidArgument("KV store: the pool view has no blocks");
  std::vector<Descriptor> seg;
  pool.segments(0, seg);
  if (seg.empty()) return InvalidArgument("KV store: a block of the pool view has no segments");
  std::vector<std::uint64_t> shape;
  for (const Descriptor& d : seg) {
    if (d.length == 0) return InvalidArgument("KV store: a segment of zero bytes");
    shape.push_back(d.length);
  }
  return shape;
}

Result<BlockLists> block_lists(const KvPoolView& pool, const std::vector<std::uint64_t>& shape,
                               std::span<const std::uint32_t> blocks, std::span<const std::uint32_t> entries,
                               std::uint32_t file_id) {
  std::uint64_t block_bytes = 0;
  for (std::uint64_t s : shape) block_bytes += s;
  BlockLists out{DescriptorList(pool.kind), DescriptorList(MemoryKind::kFile), {}};
  out.memory.reserve(blocks.size() * shape.size());
  out.file.reserve(blocks.size() * shape.size());
  std::vector<Descriptor> seg;
  for (std::size_t k = 0; k < blocks.size(); ++k) {
    if (blocks[k] >= pool.blocks)
      return OutOfRange("KV store: block " + std::to_string(blocks[k]) + " but the pool has " +
                        std::to_string(pool.blocks));
    seg.clear();
    pool.segments(blocks[k], seg);
    if (seg.size() != shape.size())
      return InvalidArgument("KV store: block " + std::to_string(blocks[k]) + " has " +
                             std::to_string(seg.size()) + " segments, block 0 has " +
                             std::to_string(shape.size()));
    out.first.push_back(out.memory.size());
    std::uint64_t offset = std::uint64_t{entries[k]} * block_bytes;
    for (std::size_t i = 0; i < seg.size(); ++i) {
      if (seg[i].length != shape[i])
        return InvalidArgument("KV store: segment " + std::to_string(i) + " of block " +
                               std::to_string(blocks[k]) + " differs in length from block 0's");
      out.memory.add(seg[i]);
      out.file.add(Descriptor{offset, seg[i].length, file_id});
      offset += seg[i].length;
    }
  }
  return out;
}

std::uint64_t block_checksum(const DescriptorList& memory, std::size_t first, std::size_t count) {
  struct Free {
    void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
  };
  thread_local std::unique_ptr<XXH3_state_t, Free> state(XXH3_createState());
  XXH3_64bits_reset(state.get());
  for (std::size_t i = first; i < first + count; ++i)
    XXH3_64bits_update(state.get(), reinterpret_cast<const void*>(memory[i].address), memory[i].length);
  return XXH3_64bits_digest(state.get());
}

}  // namespace detail
}  // namespace kvferry
