#ifdef KVFERRY_HAVE_CUDA
#include "bench/bench_vram_pool.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>

namespace kvferry::cli {
namespace {

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Pattern bytes of [offset, offset + n) (offset and n multiples of 8).
void pattern(std::uint8_t* out, std::uint64_t seed, std::uint64_t offset, std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; i += 8) {
    const std::uint64_t v = splitmix64(seed + (offset + i) / 8);
    std::memcpy(out + i, &v, 8);
  }
}

template <typename F>
void parallel_chunks(std::uint64_t total, F f) {
  const unsigned threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  const std::uint64_t chunk = (total / threads + 4095) / 4096 * 4096;
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    const std::uint64_t b = t * chunk, e = std::min(total, b + chunk);
    if (b < e) pool.emplace_back([=] { f(b, e); });
  }
  for (auto& th : pool) th.join();
}

Status cuda_ok(cudaError_t e, const char* what) {
  return e == cudaSuccess ? Status::Ok() : IoError(std::string(what) + ": " + cudaGetErrorString(e));
}

}  // namespace

Result<VramPool> VramPool::allocate(const PoolShape& shape, int device) {
  KVF_RETURN_IF_ERROR(shape.validate());
  if (shape.block_size % 8 != 0) return InvalidArgument("--mem vram needs a block size that is a multiple of 8");
  KVF_RETURN_IF_ERROR(cuda_ok(cudaSetDevice(device), "cudaSetDevice"));
  void* p = nullptr;
  KVF_RETURN_IF_ERROR(cuda_ok(cudaMalloc(&p, shape.total_bytes()), "cudaMalloc of the vram pool"));
  VramPool pool(shape, device, static_cast<std::uint8_t*>(p));
  KVF_RETURN_IF_ERROR(pool.poison());
  return pool;
}

VramPool::VramPool(VramPool&& o) noexcept : shape_(o.shape_), device_(o.device_), base_(o.base_) { o.base_ = nullptr; }

VramPool::~VramPool() {
  if (base_) cudaFree(base_);
}

DescriptorList VramPool::region() const {
  return DescriptorList(MemoryKind::kVram,
                        {Descriptor{address(), shape_.total_bytes(), static_cast<std::uint32_t>(device_)}});
}

DescriptorList VramPool::block_descriptors(const PoolShape& shape, std::uint64_t base, int device) {
  DescriptorList out(MemoryKind::kVram);
  for (const Descriptor& d : shape.block_descriptors(base))
    out.add(d.address, d.length, static_cast<std::uint32_t>(device));
  return out;
}

void fill_pattern_bytes(std::uint8_t* out, std::uint64_t bytes, std::uint64_t seed) {
  parallel_chunks(bytes, [&](std::uint64_t b, std::uint64_t e) { pattern(out + b, seed, b, e - b); });
}

Status VramPool::fill_pattern(std::uint64_t seed) {
  std::vector<std::uint8_t> host(shape_.total_bytes());
  fill_pattern_bytes(host.data(), host.size(), seed);
  KVF_RETURN_IF_ERROR(cuda_ok(cudaSetDevice(device_), "cudaSetDevice"));
  return cuda_ok(cudaMemcpy(base_, host.data(), host.size(), cudaMemcpyHostToDevice), "upload pattern");
}

Status VramPool::poison() {
  KVF_RETURN_IF_ERROR(cuda_ok(cudaSetDevice(device_), "cudaSetDevice"));
  KVF_RETURN_IF_ERROR(cuda_ok(cudaMemset(base_, 0xA5, shape_.total_bytes()), "cudaMemset"));
  return cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

Result<std::vector<std::uint8_t>> VramPool::download() const {
  std::vector<std::uint8_t> host(shape_.total_bytes());
  KVF_RETURN_IF_ERROR(cuda_ok(cudaSetDevice(device_), "cudaSetDevice"));
  KVF_RETURN_IF_ERROR(cuda_ok(cudaMemcpy(host.data(), base_, host.size(), cudaMemcpyDeviceToHost), "download"));
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

}  // namespace kvferry::cli
#endif  // KVFERRY_HAVE_CUDA
