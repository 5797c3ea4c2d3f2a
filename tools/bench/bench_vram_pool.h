// bench_vram_pool.h — the GPU twin of HostPool for `kvferry bench --mem vram`: one
// cudaMalloc of the same shape (block (layer, b) at base + index_of(layer, b) *
// block_size), and the data patterns both bench processes derive from a seed.
#pragma once

#include <cstdint>
#include <vector>

#include "common/host_pool.h"
#include "kvferry/kvferry.h"

namespace kvferry::cli {

class VramPool {
 public:
  static Result<VramPool> allocate(const PoolShape& shape, int device);
  VramPool(VramPool&& o) noexcept;
  VramPool& operator=(VramPool&&) = delete;
  VramPool(const VramPool&) = delete;
  ~VramPool();

  std::uint8_t* data() const { return base_; }
  std::uint64_t address() const { return reinterpret_cast<std::uint64_t>(base_); }
  DescriptorList region() const;
  DescriptorList block_descriptors() const { return block_descriptors(shape_, address(), device_); }
  static DescriptorList block_descriptors(const PoolShape& shape, std::uint64_t base, int device);

  // Word w (8 bytes at offset 8w) of the pattern is splitmix64(seed + w).
  Status fill_pattern(std::uint64_t seed);
  Status poison();  // every byte 0xA5
  Result<std::vector<std::uint8_t>> download() const;
  Result<std::uint64_t> checksum() const;
  static std::uint64_t checksum_of(const std::vector<std::uint8_t>& bytes);

 private:
  VramPool(PoolShape shape, int device, std::uint8_t* base) : shape_(shape), device_(device), base_(base) {}
  PoolShape shape_;
  int device_ = 0;
  std::uint8_t* base_ = nullptr;
};

// Host-side twins of the pattern and checksum, for a target whose pool is host memory.
void fill_pattern_bytes(std::uint8_t* out, std::uint64_t bytes, std::uint64_t seed);
std::uint64_t checksum_bytes(const std::uint8_t* bytes, std::uint64_t n);

// A pool's expected contents after moving block index src[i] of a pattern(seed) pool to
// block index dst[i] of a poisoned one.
std::vector<std::uint8_t> expected_image(const PoolShape& shape, std::uint64_t seed,
                                         const std::vector<std::uint32_t>& src, const std::vector<std::uint32_t>& dst);

}  // namespace kvferry::cli
