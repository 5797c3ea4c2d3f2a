// kvferry/kv/kv_pool.h — a KV pool: a layout plus where its tensors live.
//
// Contract
// - A `KvPool` describes memory; it never owns, allocates or registers it. The engine
//   owns its tensors and registers `tensor_regions()` with its Agent (one region per
//   tensor, never per block) before preparing transfers over the pool.
// - Immutable value: copy freely, share between threads.
// - A pool can describe a peer's memory too (addresses in the peer's address space),
//   as decoded from the peer's "kv.pool" metadata entry (see kv_handshake.h).
// - `encode()` / `decode()` are the versioned "kv.pool" metadata entry. `decode` takes
//   untrusted bytes: bounds-checked, every field validated; garbage is a Corrupt error,
//   never a crash. Format (little-endian):
//     "KVPL" | version u8 (=1) | arrangement u8 | dtype u8 | memory kind u8 |
//     layers u32 | kv_heads u32 | head_dim u32 | block_tokens u32 | blocks u32 |
//     device u32 | tensor count u32 | tensor addresses u64 x count
//   A later version may append fields; a reader rejects versions it does not know
//   with a message that says so.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kvferry/block_lanes.h"
#include "kvferry/kv/kv_layout.h"
#include "kvferry/memory.h"
#include "kvferry/status.h"

namespace kvferry {

class KvPool {
 public:
  // One address per tensor, in tensor order (kv_layout.h: layer order; SGLang: k[0],
  // v[0], k[1], v[1], ...). Tensors must not overlap.
  static Result<KvPool> create(const KvLayout& layout, MemoryKind kind,
                               std::vector<std::uint64_t> tensor_addresses, std::uint32_t device = 0);
  // The tensors back to back from `base` (one allocation carved into tensors).
  static Result<KvPool> create_contiguous(const KvLayout& layout, MemoryKind kind, std::uint64_t base,
                                          std::uint32_t device = 0);

  const KvLayout& layout() const { return layout_; }
  MemoryKind kind() const { return kind_; }
  std::uint32_t device() const { return device_; }
  const std::vector<std::uint64_t>& tensor_addresses() const { return tensor_addresses_; }

  // Address of block `block` of `lane` (kv_layout.h); segment_bytes() long.
  std::uint64_t segment_address(std::uint32_t lane, std::uint32_t block) const {
    return tensor_addresses_[layout_.tensor_of_lane(lane)] + layout_.segment_offset(lane, block);
  }

  // What to register: one descriptor per tensor.
  DescriptorList tensor_regions() const;
  // Every (lane, block) segment, at index layout().descriptor_index(lane, block): the
  // list to prepare once (Agent::prepare_local / prepare_remote) for index transfers.
  DescriptorList block_descriptors() const;
  // The same segments as lanes x blocks (block_lanes.h): lane l's block b at
  // segment_address(l, b). What strided transfers are prepared over.
  BlockLanes block_lanes() const;

  std::vector<std::uint8_t> encode() const;
  static Result<KvPool> decode(std::span<const std::uint8_t> bytes);

 private:
  KvPool(KvLayout layout, MemoryKind kind, std::uint32_t device, std::vector<std::uint64_t> addresses)
      : layout_(layout), kind_(kind), device_(device), tensor_addresses_(std::move(addresses)) {}

  KvLayout layout_;
  MemoryKind kind_;
  std::uint32_t device_;
  std::vector<std::uint64_t> tensor_addresses_;
};

}  // namespace kvferry
