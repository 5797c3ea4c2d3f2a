#ifdef KVFERRY_HAVE_CUDA
#include "bench/bench_vram_pool.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>

#include "common/block_pattern.h"
#include "common/parallel_chunks.h"

namespace kvferry::cli {
namespace {

// Pattern bytes of [offset, offset + n) (offset and n multiples of 8).
void pattern(std::uint8_t* out, std::uint64_t seed, std::uint64_t offset, std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; i += 8) {
    const std::uint64_t v = mix64(seed + (offset + i) / 8);
    std::memcpy(out + i, &v, 8);
  }
}

Status cuda_ok(cudaError_t e, const char* what) {
  return e == cudaSuccess ? Status::Ok() : IoError(std::string(what) + ": " + cudaGetErrorString(e));
}

}  // namespace

Result<VramPool> VramPool::allocate(const PoolShape& shape, int device, bool layer_tensors) {
  KVF_RETURN_IF_ERROR(shape.validate());
  if (shape.block_size % 8 != 0) return InvalidArgument("--mem vram needs a block size that is a multiple of 8");
  KVF_RETURN_IF_ERROR(cuda_ok(cudaSetDevice(device), "cudaSetDevice"));
  VramPool pool(shape, device);
  const std::uint64_t layer_bytes = std::uint64_t{shape.blocks_per_layer} * shape.block_size;
  const std::uint32_t count = layer_tensors ? shape.layers : 1;
  const std::uint64_t each = layer_tensors ? layer_bytes : shape.total_bytes();
  for (std::uint32_t k = 0; k < count; ++k) {
    void* p = nullptr;
    KVF_RETURN_IF_ERROR(cuda_ok(cudaMalloc(&p, each), "cudaMalloc of the vram pool"));
    pool.allocations_.emplace_back(static_cast<std::uint8_t*>(p), each);
  }
  for (std::uint32_t l = 0; l < shape.layers; ++l)
    pool.layer_bases_.push_back(layer_tensors ? reinterpret_cast<std::uint64_t>(pool.allocations_[l].first)
                                              : reinterpret_cast<std::uint64_t>(pool.data()) + l * layer_bytes);
  KVF_ASSIGN_OR_RETURN(KvPool described, shape.pool_at(MemoryKind::kVram, pool.layer_bases_, static_cast<std::uint32_t>(device)));
  pool.pool_ = std::move(described);
  KVF_RETURN_IF_ERROR(pool.poison());
  return pool;
}

VramPool::VramPool(VramPool&& o) noexcept
    : shape_(o.shape_), device_(o.device_), allocations_(std::move(o.allocations_)),
      layer_bases_(std::move(o.layer_bases_)), pool_(std::move(o.pool_)) {
  o.allocations_.clear();
}

VramPool::~VramPool() {
  for (auto& [p, n] : allocations_) cudaFree(p);
}

DescriptorList VramPool::region() const {
  DescriptorList out(MemoryKind::kVram);
  for (const auto& [p, n] : allocations_)
    out.add(reinterpret_cast<std::uint64_t>(p), n, static_cast<std::uint32_t>(device_));
  return out;
}

std::vector<std::uint64_t> VramPool::layer_bases_of(const PoolShape& shape, const std::vector<std::uint64_t>& reported) {
  if (reported.size() == shape.layers) return reported;
  if (reported.size() != 1) return {};
  std::vector<std::uint64_t> bases;
  for (std::uint32_t l = 0; l < shape.layers; ++l)
    bases.push_back(reported[0] + std::uint64_t{l} * shape.blocks_per_layer * shape.block_size);
  return bases;
}

void fill_pattern_bytes(std::uint8_t* out, std::uint64_t bytes, std::uint64_t seed) {
  parallel_chunks(bytes, [&](std::uint64_t b, std::uint64_t e) { pattern(out + b, seed, b, e - b); });
}

Status VramPool::fill_pattern(std::uint64_t seed) {
  std::vector<std::uint8_t> host(shape_.total_bytes());
  fill_pattern_bytes(host.data(), host.size(), seed);
  KVF_RETURN_IF_ERROR(cuda_ok(cudaSetDevice(device_), "cudaSetDevice"));
  std::uint64_t at = 0;
  for (const auto& [p, n] : allocations_) {
    KVF_RETURN_IF_ERROR(cuda_ok(cudaMemcpy(p, host.data() + at, n, cudaMemcpyHostToDevice), "upload pattern"));
    at += n;
  }
  // cudaMemcpy from pageable memory may return once the bytes are staged, before the DMA
  // into the GPU has ended (CUDA's API synchronization notes): a peer that reads the pool
  // right after "filled" could see the old bytes. Wait for it.
  return cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

Status VramPool::poison() {
  KVF_RETURN_IF_ERROR(cuda_ok(cudaSetDevice(device_), "cudaSetDevice"));
  for (const auto& [p, n] : allocations_) KVF_RETURN_IF_ERROR(cuda_ok(cudaMemset(p, 0xA5, n), "cudaMemset"));
  return cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

Result<std::vector<std::uint8_t>> VramPool::download() const {
  std::vector<std::uint8_t> host(shape_.total_bytes());
  KVF_RETURN_IF_ERROR(cuda_ok(cudaSetDevice(device_), "cudaSetDevice"));
  std::uint64_t at = 0;
  for (const auto& [p, n] : allocations_) {
    KVF_RETURN_IF_ERROR(cuda_ok(cudaMemcpy(host.data() + at, p, n, cudaMemcpyDeviceToHost), "download"));
    at += n;
  }
  return host;
}

Result<std::uint64_t> VramPool::checksum() const {
  KVF_ASSIGN_OR_RETURN(auto host, download());
  return checksum_of(host);
}

// FNV-1a over 64-bit words per 64 MiB chunk (in parallel), then over the chunk sums.
std::uint64_t VramPool::checksum_of(const std::vector<std::uint8_t>& bytes) {
  return checksum_bytes(bytes.data(), bytes.size());
}

std::uint64_t checksum_bytes(const std::uint8_t* data, std::uint64_t n) {
  struct View {
    const std::uint8_t* p;
    std::uint64_t n;
    std::uint64_t size() const { return n; }
    const std::uint8_t* data() const { return p; }
    std::uint8_t operator[](std::uint64_t i) const { return p[i]; }
  } bytes{data, n};
  constexpr std::uint64_t kChunk = 64u << 20, kPrime = 0x100000001b3ull;
  const std::uint64_t chunks = (bytes.size() + kChunk - 1) / kChunk;
  std::vector<std::uint64_t> sums(chunks);
  parallel_chunks(chunks, [&](std::uint64_t b, std::uint64_t e) {
    for (std::uint64_t c = b; c < e; ++c) {
      std::uint64_t h = 0xcbf29ce484222325ull;
      const std::uint64_t end = std::min<std::uint64_t>(bytes.size(), (c + 1) * kChunk);
      std::uint64_t i = c * kChunk;
      for (; i + 8 <= end; i += 8) {
        std::uint64_t w;
        std::memcpy(&w, bytes.data() + i, 8);
        h = (h ^ w) * kPrime;
      }
      for (; i < end; ++i) h = (h ^ bytes[i]) * kPrime;
      sums[c] = h;
    }
  });
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::uint64_t s : sums) h = (h ^ s) * kPrime;
  return h;
}

std::vector<std::uint8_t> expected_image(const PoolShape& shape, std::uint64_t seed,
                                         const std::vector<std::uint32_t>& src, const std::vector<std::uint32_t>& dst) {
  std::vector<std::uint8_t> image(shape.total_bytes(), 0xA5);
  const std::uint64_t bs = shape.block_size;
  parallel_chunks(src.size(), [&](std::uint64_t b, std::uint64_t e) {
    for (std::uint64_t i = b; i < e; ++i) pattern(image.data() + dst[i] * bs, seed, src[i] * bs, bs);
  });
  return image;
}

std::string describe_difference(const PoolShape& shape, const std::vector<std::uint8_t>& expect,
                                const std::vector<std::uint8_t>& got, std::uint64_t seed) {
  if (expect.size() != got.size()) return "sizes differ";
  const std::uint64_t bs = shape.block_size;
  std::uint64_t differing = 0, first = UINT64_MAX;
  for (std::uint64_t i = 0; i < got.size(); ++i) {
    if (got[i] != expect[i]) {
      ++differing;
      first = std::min(first, i);
    }
  }
  if (differing == 0) return {};
  const std::uint64_t block = first / bs;
  const std::uint8_t* g = got.data() + block * bs;
  std::string what = "other bytes";
  if (std::all_of(g, g + bs, [](std::uint8_t b) { return b == 0xA5; })) {
    what = "the poison (never written)";
  } else {
    std::vector<std::uint8_t> source(bs);
    for (std::uint64_t b = 0; b < got.size() / bs; ++b) {
      pattern(source.data(), seed, b * bs, bs);
      if (std::memcmp(g, source.data(), bs) == 0) {
        what = "the source's block index " + std::to_string(b);
        break;
      }
    }
  }
  return std::to_string(differing) + " bytes differ; the first at block index " + std::to_string(block) +
         " + " + std::to_string(first % bs) + ", which holds " + what;
}

}  // namespace kvferry::cli
#endif  // KVFERRY_HAVE_CUDA
