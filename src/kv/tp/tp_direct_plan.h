// tp_direct_plan.h — head-slice descriptors between two pools of different TP ranks (the
// direct path, no staging), and the naive per-head plan engines build without a library
// (kept for `kvferry bench --tp`, which measures what the staging paths save).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kvferry/kv/kv_pool.h"
#include "kvferry/memory.h"
#include "kvferry/status.h"

namespace kvferry::tp {

// Address of the row (layer, kv part, block, slot in block, local head) of `pool`:
// head_dim * dtype bytes, per the pool's arrangement (kv_layout.h).
std::uint64_t row_address(const KvPool& pool, std::uint32_t layer, std::uint32_t kv_part, std::uint32_t block,
                          std::uint32_t slot, std::uint32_t head);

// Descriptor pairs that merge on append when both sides continue the previous pair.
class DescriptorPairs {
 public:
  DescriptorPairs(MemoryKind local_kind, std::uint32_t local_device, MemoryKind remote_kind,
                  std::uint32_t remote_device)
      : local_kind_(local_kind), remote_kind_(remote_kind), local_device_(local_device), remote_device_(remote_device) {}
  void add(std::uint64_t local, std::uint64_t remote, std::uint64_t length);
  // The next add() starts a new pair even when it continues this one.
  void seal() { sealed_ = true; }
  std::size_t size() const { return local_.size(); }
  DescriptorList local() const { return DescriptorList(local_kind_, local_); }
  DescriptorList remote() const { return DescriptorList(remote_kind_, remote_); }

 private:
  MemoryKind local_kind_;
  MemoryKind remote_kind_;
  std::vector<Descriptor> local_;
  std::vector<Descriptor> remote_;
  std::uint32_t local_device_;
  std::uint32_t remote_device_;
  std::uint64_t next_local_ = 0;
  std::uint64_t next_remote_ = 0;
  bool sealed_ = true;
};

// One side of a head slice: a pool, the request's block table there, the first local head.
struct HeadSlice {
  const KvPool* pool = nullptr;
  std::span<const std::uint32_t> blocks;
  std::uint32_t first_head = 0;
};

enum class SlicePlan {
  kMerged,  // the direct path: rows merged wherever both sides are adjacent
  kNaive,   // one pair per (layer, kv, block, head) where a head's tokens are adjacent on both
            // sides (vllm-hnd, same block size), else per (layer, kv, token, head); heads in
            // descending order so that no two neighbours in the list merge
};

// Pairs moving `heads` heads of tokens [first_token, first_token + tokens) from `source`
// to `destination`, appended to `out` (local = source). InvalidArgument when a block
// table is too short, a block id or a head is outside its pool, or the geometries differ.
Status plan_head_slices(const HeadSlice& source, const HeadSlice& destination, std::uint32_t heads,
                        std::uint64_t first_token, std::uint64_t tokens, SlicePlan plan, DescriptorPairs& out);

// The pairs plan_head_slices(kMerged) makes, counted without building them.
std::uint64_t count_merged_slices(const KvLayout& source, const KvLayout& destination, std::uint32_t heads,
                                  std::uint64_t tokens);

// Bytes of one head of one token: head_dim x the dtype's size (a row of every arrangement).
std::uint64_t head_row_bytes(const KvLayout& layout);

}  // namespace kvferry::tp
