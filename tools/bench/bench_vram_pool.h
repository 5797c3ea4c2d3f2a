// bench_vram_pool.h — the GPU twin of HostPool for `kvferry bench --mem vram`, on the
// library's KvPool as HostPool is (the allocation is CUDA's, the addresses KvPool's): one
// cudaMalloc of the same shape (block (layer, b) at base + index_of(layer, b) *
// block_size), or with --layer-tensors one cudaMalloc per layer (block b of layer l at
// layer_bases()[l] + b * block_size), as an engine allocates one KV tensor per layer;
// and the data patterns both bench processes derive from a seed. Patterns, downloads
// and checksums see the pool as one image in index_of order either way.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "common/host_pool.h"
#include "kvferry/kvferry.h"

namespace kvferry::cli {

class VramPool {
 public:
  static Result<VramPool> allocate(const PoolShape& shape, int device, bool layer_tensors = false);
  VramPool(VramPool&& o) noexcept;
  VramPool& operator=(VramPool&&) = delete;
  VramPool(const VramPool&) = delete;
  ~VramPool();

  // The first allocation (the whole pool unless one_allocation() is false).
  std::uint8_t* data() const { return allocations_.front().first; }
  bool one_allocation() const { return allocations_.size() == 1; }
  // Where each layer starts: what the pool's owner reports to its peer.
  const std::vector<std::uint64_t>& layer_bases() const { return layer_bases_; }
  DescriptorList region() const;  // one descriptor per allocation
  // The library's pool over these allocations (PoolShape::pool_at): its descriptors and
  // lanes (one per layer) are what transfers are prepared over.
  const KvPool& pool() const { return *pool_; }
  DescriptorList block_descriptors() const { return pool_->block_descriptors(); }
  BlockLanes block_lanes() const { return pool_->block_lanes(); }
  // A pool's layer bases from the addresses its owner reported: one (a single allocation)
  // or one per layer; empty when the count fits neither.
  static std::vector<std::uint64_t> layer_bases_of(const PoolShape& shape, const std::vector<std::uint64_t>& reported);

  // Word w (8 bytes at offset 8w) of the pattern is splitmix64(seed + w).
  Status fill_pattern(std::uint64_t seed);
  Status poison();  // every byte 0xA5
  Result<std::vector<std::uint8_t>> download() const;
  Result<std::uint64_t> checksum() const;
  static std::uint64_t checksum_of(const std::vector<std::uint8_t>& bytes);

 private:
  VramPool(PoolShape shape, int device) : shape_(shape), device_(device) {}
  PoolShape shape_;
  int device_ = 0;
  // (address, bytes) in image order: the whole pool, or one per layer.
  std::vector<std::pair<std::uint8_t*, std::uint64_t>> allocations_;
  std::vector<std::uint64_t> layer_bases_;
  std::optional<KvPool> pool_;  // set by allocate()
};

// Host-side twins of the pattern and checksum, for a target whose pool is host memory.
void fill_pattern_bytes(std::uint8_t* out, std::uint64_t bytes, std::uint64_t seed);
std::uint64_t checksum_bytes(const std::uint8_t* bytes, std::uint64_t n);

// A pool's expected contents after moving block index src[i] of a pattern(seed) pool to
// block index dst[i] of a poisoned one.
std::vector<std::uint8_t> expected_image(const PoolShape& shape, std::uint64_t seed,
                                         const std::vector<std::uint32_t>& src, const std::vector<std::uint32_t>& dst);

// Where `got` differs from `expect` (pools of `shape`), for a failed check: how many bytes,
// the first differing block and offset, and whether that block holds the poison, the
// pattern(seed) bytes of some block index of the source pool, or neither. Empty when
// they are equal.
std::string describe_difference(const PoolShape& shape, const std::vector<std::uint8_t>& expect,
                                const std::vector<std::uint8_t>& got, std::uint64_t seed);

}  // namespace kvferry::cli
