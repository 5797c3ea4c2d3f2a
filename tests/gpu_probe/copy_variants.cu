// kvferry_copy_variants: a diagnostic, not a test. Which way of moving many scattered
// 64 KiB blocks between two GPUs over NVLink comes closest to one contiguous peer copy?
// The cuda_ipc acceptance shape (40 layers x 1,000 scattered blocks), one process, peer
// access, the kernels launched on GPU0 ("write": GPU0 -> GPU1 stores; "read": GPU1 -> GPU0
// loads), each against the contiguous cudaMemcpyPeerAsync of the same bytes measured
// around it. Variants:
//   sm T/U/G    thread-block copies: T threads per block, U 16-byte loads in flight per
//               thread, grid G blocks per SM, streaming cache hints (cs) or none (def)
//   warp U/G    one warp per item
//   bulk S x C  one elected thread per block moves each item through S shared-memory
//               stages of C bytes with the Hopper bulk-copy engine (cp.async.bulk)
// Every variant's destination is poisoned first and compared with its source after.
// Standalone: nvcc -O3 -std=c++17 -arch=sm_90 copy_variants.cu -o kvferry_copy_variants
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace {

#define CK(x)                                                               \
  do {                                                                      \
    cudaError_t e_ = (x);                                                   \
    if (e_ != cudaSuccess) {                                                \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x,        \
                   cudaGetErrorString(e_));                                 \
      std::exit(1);                                                         \
    }                                                                       \
  } while (0)

struct Item {
  std::uint64_t src, dst, length;
};

// ---- thread-block and warp copies -------------------------------------------------------
template <bool kStreaming>
__device__ __forceinline__ int4 load16(const int4* p) {
  if constexpr (kStreaming) return __ldcs(p);
  else return *p;
}
template <bool kStreaming>
__device__ __forceinline__ void store16(int4* p, int4 v) {
  if constexpr (kStreaming) __stcs(p, v);
  else *p = v;
}

template <unsigned T, unsigned U, bool S>
__global__ void __launch_bounds__(T) block_copy(const Item* __restrict__ items, std::uint32_t count) {
  for (std::uint32_t i = blockIdx.x; i < count; i += gridDim.x) {
    const Item it = items[i];
    const auto* s4 = reinterpret_cast<const int4*>(it.src);
    auto* d4 = reinterpret_cast<int4*>(it.dst);
    const std::uint64_t n16 = it.length >> 4;
    std::uint64_t j = threadIdx.x;
    for (; j + (U - 1) * T < n16; j += U * T) {
      int4 v[U];
#pragma unroll
      for (unsigned u = 0; u < U; ++u) v[u] = load16<S>(s4 + j + u * T);
#pragma unroll
      for (unsigned u = 0; u < U; ++u) store16<S>(d4 + j + u * T, v[u]);
    }
    for (; j < n16; j += T) store16<S>(d4 + j, load16<S>(s4 + j));
  }
}

template <unsigned U>
__global__ void __launch_bounds__(256) warp_copy(const Item* __restrict__ items, std::uint32_t count) {
  const unsigned lane = threadIdx.x & 31;
  const std::uint32_t warps = gridDim.x * (blockDim.x / 32);
  for (std::uint32_t i = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; i < count; i += warps) {
    const Item it = items[i];
    const auto* s4 = reinterpret_cast<const int4*>(it.src);
    auto* d4 = reinterpret_cast<int4*>(it.dst);
    const std::uint64_t n16 = it.length >> 4;
    std::uint64_t j = lane;
    for (; j + (U - 1) * 32 < n16; j += U * 32) {
      int4 v[U];
#pragma unroll
      for (unsigned u = 0; u < U; ++u) v[u] = __ldcs(s4 + j + u * 32);
#pragma unroll
      for (unsigned u = 0; u < U; ++u) __stcs(d4 + j + u * 32, v[u]);
    }
    for (; j < n16; j += 32) __stcs(d4 + j, __ldcs(s4 + j));
  }
}

// ---- bulk copies through shared memory (sm_90) -----------------------------------------
__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void bar_init(std::uint64_t* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(bar)));
}
__device__ __forceinline__ void bar_expect(std::uint64_t* bar, std::uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void bar_wait(std::uint64_t* bar, std::uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WAIT_%=;\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void bulk_load(void* smem, std::uint64_t gsrc, std::uint32_t bytes, std::uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smem_addr(smem)),
      "l"(gsrc), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}
__device__ __forceinline__ void bulk_store(std::uint64_t gdst, const void* smem, std::uint32_t bytes) {
  asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" ::"l"(gdst), "r"(smem_addr(smem)),
               "r"(bytes)
               : "memory");
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}
template <int N>
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;" ::"n"(N) : "memory");
}
__device__ __forceinline__ void bulk_wait_all() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }

// One thread per block walks its items' chunks: loads run up to kStages ahead; a stage is
// loaded again only after the store that read it has finished reading.
template <int kStages, std::uint32_t kChunk>
__global__ void __launch_bounds__(32) bulk_copy(const Item* __restrict__ items, std::uint32_t count) {
  extern __shared__ __align__(128) unsigned char buf[];
  __shared__ __align__(8) std::uint64_t bars[kStages];
  if (threadIdx.x != 0) return;
  for (int s = 0; s < kStages; ++s) bar_init(&bars[s]);
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  // The chunk sequence of this block: item i (grid-stride), offset off.
  std::uint32_t li = blockIdx.x;  // next item to load
  std::uint64_t loff = 0;
  std::uint32_t si = blockIdx.x;  // next item to store
  std::uint64_t soff = 0;
  std::uint64_t loaded = 0, stored = 0;  // chunk counters
  auto issue_load = [&]() -> bool {
    if (li >= count) return false;
    const Item it = items[li];
    const std::uint32_t n = static_cast<std::uint32_t>((it.length - loff < kChunk ? it.length - loff : kChunk));
    const int s = static_cast<int>(loaded % kStages);
    bar_expect(&bars[s], n);
    bulk_load(buf + s * kChunk, it.src + loff, n, &bars[s]);
    ++loaded;
    loff += n;
    if (loff >= it.length) {
      loff = 0;
      li += gridDim.x;
    }
    return true;
  };
  for (int s = 0; s < kStages; ++s)
    if (!issue_load()) break;
  while (stored < loaded) {
    const int s = static_cast<int>(stored % kStages);
    bar_wait(&bars[s], static_cast<std::uint32_t>((stored / kStages) & 1));
    const Item it = items[si];
    const std::uint32_t n = static_cast<std::uint32_t>((it.length - soff < kChunk ? it.length - soff : kChunk));
    bulk_store(it.dst + soff, buf + s * kChunk, n);
    ++stored;
    soff += n;
    if (soff >= it.length) {
      soff = 0;
      si += gridDim.x;
    }
    // The stage of the previous store may be refilled once that store has read it.
    if (stored >= 2) bulk_wait_read<1>();
    else bulk_wait_read<0>();
    issue_load();
  }
  bulk_wait_all();
}

// ---- harness ----------------------------------------------------------------------------
using Clock = std::chrono::steady_clock;

struct Timing {
  double best = 0, median = 0;  // GB/s
};

template <typename F>
Timing measure(std::uint64_t bytes, int reps, F run) {
  std::vector<double> g;
  for (int r = 0; r <= reps; ++r) {
    CK(cudaDeviceSynchronize());
    const auto t0 = Clock::now();
    run();
    CK(cudaDeviceSynchronize());
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (r > 0) g.push_back(double(bytes) / s / 1e9);
  }
  std::sort(g.begin(), g.end());
  return Timing{g.back(), g[g.size() / 2]};
}

}  // namespace

int main(int argc, char** argv) {
  int layers = 40, blocks = 1000, reps = 7;
  std::uint64_t block = 64u << 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--layers") layers = std::atoi(argv[i + 1]);
    if (k == "--blocks") blocks = std::atoi(argv[i + 1]);
    if (k == "--block") block = std::strtoull(argv[i + 1], nullptr, 10);
    if (k == "--reps") reps = std::atoi(argv[i + 1]);
  }
  int gpus = 0;
  CK(cudaGetDeviceCount(&gpus));
  // With one GPU both pools live on it: the figures are then a local-copy diagnostic only.
  const int peer = gpus >= 2 ? 1 : 0;
  const std::uint64_t bytes = std::uint64_t(layers) * blocks * block;
  const std::uint64_t pool_blocks = 2ull * blocks;
  const std::uint64_t pool_bytes = std::uint64_t(layers) * pool_blocks * block;
  unsigned char *g0 = nullptr, *g1 = nullptr;
  CK(cudaSetDevice(peer));
  CK(cudaMalloc(&g1, pool_bytes));
  if (peer != 0) CK(cudaDeviceEnablePeerAccess(0, 0));
  CK(cudaSetDevice(0));
  CK(cudaMalloc(&g0, pool_bytes));
  if (peer != 0) CK(cudaDeviceEnablePeerAccess(peer, 0));
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  {
    std::vector<std::uint64_t> host(pool_bytes / 8);
    std::mt19937_64 rng(7);
    for (auto& v : host) v = rng();
    CK(cudaMemcpy(g0, host.data(), pool_bytes, cudaMemcpyHostToDevice));
    for (auto& v : host) v = rng();
    CK(cudaMemcpy(g1, host.data(), pool_bytes, cudaMemcpyHostToDevice));
  }
  std::mt19937 rng(11);
  std::vector<std::uint32_t> a(pool_blocks), b(pool_blocks);
  std::iota(a.begin(), a.end(), 0u);
  std::iota(b.begin(), b.end(), 0u);
  std::shuffle(a.begin(), a.end(), rng);
  std::shuffle(b.begin(), b.end(), rng);
  std::vector<Item> write, read;
  for (int l = 0; l < layers; ++l)
    for (int i = 0; i < blocks; ++i) {
      const std::uint64_t s = (std::uint64_t(l) * pool_blocks + a[i]) * block;
      const std::uint64_t d = (std::uint64_t(l) * pool_blocks + b[i]) * block;
      write.push_back(Item{reinterpret_cast<std::uint64_t>(g0 + s), reinterpret_cast<std::uint64_t>(g1 + d), block});
      read.push_back(Item{reinterpret_cast<std::uint64_t>(g1 + d), reinterpret_cast<std::uint64_t>(g0 + s), block});
    }
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  Item* table = nullptr;
  CK(cudaMalloc(&table, write.size() * sizeof(Item)));
  std::printf("kvferry_copy_variants: %d x %d scattered x %llu B = %.3f GB, GPU0 -> GPU%d (write) and GPU%d -> GPU0 "
              "(read), %d SMs, best / median of %d\n",
              layers, blocks, (unsigned long long)block, bytes / 1e9, peer, peer, sms, reps);
  std::printf("%-24s %8s %8s %6s   %8s %8s %6s  %s\n", "variant", "w best", "w med", "w/ceil", "r best", "r med",
              "r/ceil", "verified");

  // The ceiling, measured again around each variant (median of the two around it).
  auto ceiling = [&](int dir) {
    return measure(bytes, reps, [&] {
      if (dir == 0) CK(cudaMemcpyPeerAsync(g1, peer, g0, 0, bytes, st));
      else CK(cudaMemcpyPeerAsync(g0, 0, g1, peer, bytes, st));
    });
  };
  std::vector<unsigned char> hs(block), hd(block);
  auto verify = [&](const std::vector<Item>& items) {
    for (std::size_t i = 0; i < items.size(); i += 37) {
      CK(cudaMemcpy(hs.data(), reinterpret_cast<void*>(items[i].src), block, cudaMemcpyDefault));
      CK(cudaMemcpy(hd.data(), reinterpret_cast<void*>(items[i].dst), block, cudaMemcpyDefault));
      if (hs != hd) return false;
    }
    return true;
  };
  auto poison = [&](const std::vector<Item>& items) {
    for (std::size_t i = 0; i < items.size(); i += 37)
      CK(cudaMemset(reinterpret_cast<void*>(items[i].dst), 0xA5, block));
  };
  auto variant = [&](const std::string& name, auto launch, auto on_direction) {
    Timing t[2], c[2];
    bool ok = true;
    for (int dir = 0; dir < 2; ++dir) {
      on_direction(dir);
      const auto& items = dir == 0 ? write : read;
      CK(cudaMemcpy(table, items.data(), items.size() * sizeof(Item), cudaMemcpyHostToDevice));
      poison(items);
      launch(static_cast<std::uint32_t>(items.size()));
      CK(cudaGetLastError());
      CK(cudaDeviceSynchronize());
      ok = ok && verify(items);
      const Timing c0 = ceiling(dir);
      t[dir] = measure(bytes, reps, [&] { launch(static_cast<std::uint32_t>(items.size())); });
      const Timing c1 = ceiling(dir);
      c[dir].best = std::max(c0.best, c1.best);
      c[dir].median = (c0.median + c1.median) / 2;
    }
    std::printf("%-24s %8.1f %8.1f %6.3f   %8.1f %8.1f %6.3f  %s   (ceiling med %.1f / %.1f)\n", name.c_str(),
                t[0].best, t[0].median, t[0].median / c[0].median, t[1].best, t[1].median, t[1].median / c[1].median,
                ok ? "yes" : "NO", c[0].median, c[1].median);
    std::fflush(stdout);
  };
  auto sm = [&](auto kernel, unsigned threads, unsigned per_sm, const char* tag) {
    variant(std::string("sm ") + tag + " G" + std::to_string(per_sm),
            [&, kernel, threads, per_sm](std::uint32_t n) { kernel<<<per_sm * sms, threads, 0, st>>>(table, n); },
            [](int) {});
  };
  const bool orders = argc > 1 && std::string(argv[argc - 1]) == "--orders";
  if (argc > 1 && std::string(argv[argc - 1]) == "--engines") {
    // The copy engines: cudaMemcpyBatchAsync of every item, the items dealt over N streams
    // (each stream may get its own engine), against the same ceiling.
    int engines = 0;
    CK(cudaDeviceGetAttribute(&engines, cudaDevAttrAsyncEngineCount, 0));
    std::printf("async engines reported by GPU0: %d\n", engines);
    std::vector<cudaStream_t> streams(16);
    for (auto& x : streams) CK(cudaStreamCreateWithFlags(&x, cudaStreamNonBlocking));
    auto batch = [&](const std::vector<Item>& items, std::size_t from, std::size_t to, cudaStream_t s) {
      std::vector<void*> d;
      std::vector<const void*> src;
      std::vector<std::size_t> n;
      for (std::size_t i = from; i < to; ++i) {
        d.push_back(reinterpret_cast<void*>(items[i].dst));
        src.push_back(reinterpret_cast<const void*>(items[i].src));
        n.push_back(items[i].length);
      }
      cudaMemcpyAttributes attr{};
      attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
      attr.flags = cudaMemcpyFlagPreferOverlapWithCompute;
      std::size_t idx = 0;
      CK(cudaMemcpyBatchAsync(d.data(), src.data(), n.data(), d.size(), &attr, &idx, 1, s));
    };
    for (int nstreams : {1, 2, 4, 8, 16}) {
      Timing t[2];
      bool ok = true;
      for (int dir = 0; dir < 2; ++dir) {
        const auto& items = dir == 0 ? write : read;
        auto run = [&] {
          const std::size_t per = (items.size() + nstreams - 1) / nstreams;
          for (int k = 0; k < nstreams; ++k)
            batch(items, k * per, std::min(items.size(), (k + 1) * per), streams[k]);
        };
        poison(items);
        run();
        CK(cudaDeviceSynchronize());
        ok = ok && verify(items);
        t[dir] = measure(bytes, reps, run);
      }
      const Timing cw = ceiling(0), cr = ceiling(1);
      std::printf("%-24s %8.1f %8.1f %6.3f   %8.1f %8.1f %6.3f  %s   (ceiling med %.1f / %.1f)\n",
                  ("engines x" + std::to_string(nstreams)).c_str(), t[0].best, t[0].median, t[0].median / cw.median,
                  t[1].best, t[1].median, t[1].median / cr.median, ok ? "yes" : "NO", cw.median, cr.median);
      std::fflush(stdout);
    }
    return 0;
  }
  if (argc > 1 && std::string(argv[argc - 1]) == "--hybrid") {
    // SMs and copy engines at once: the kernel takes the first items, one
    // cudaMemcpyBatchAsync on a second stream the last `share` of them. Does the engine
    // add bandwidth beside the SMs' (SM copies alone stop at ~0.93 of a peer copy)?
    cudaStream_t ce;
    CK(cudaStreamCreateWithFlags(&ce, cudaStreamNonBlocking));
    cudaEvent_t forked;
    CK(cudaEventCreateWithFlags(&forked, cudaEventDisableTiming));
    for (double share : {0.0, 0.03, 0.06, 0.1, 0.15}) {
      std::vector<void*> d[2];
      std::vector<const void*> src[2];
      std::vector<std::size_t> n[2];
      for (int dir = 0; dir < 2; ++dir) {
        const auto& items = dir == 0 ? write : read;
        for (std::size_t i = items.size() - std::size_t(share * items.size()); i < items.size(); ++i) {
          d[dir].push_back(reinterpret_cast<void*>(items[i].dst));
          src[dir].push_back(reinterpret_cast<const void*>(items[i].src));
          n[dir].push_back(items[i].length);
        }
      }
      int dir_now = 0;
      char name[64];
      std::snprintf(name, sizeof name, "sm 512/4 + CE %.0f%%", share * 100);
      variant(name, [&](std::uint32_t count) {
        const int dir = dir_now;
        const std::uint32_t k = static_cast<std::uint32_t>(d[dir].size());
        CK(cudaEventRecord(forked, st));
        CK(cudaStreamWaitEvent(ce, forked, 0));
        if (k > 0) {
          cudaMemcpyAttributes attr{};
          attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
          attr.flags = cudaMemcpyFlagPreferOverlapWithCompute;
          std::size_t idx = 0;
          CK(cudaMemcpyBatchAsync(d[dir].data(), src[dir].data(), n[dir].data(), k, &attr, &idx, 1, ce));
        }
        block_copy<512, 4, true><<<4 * sms, 512, 0, st>>>(table, count - k);
        CK(cudaEventRecord(forked, ce));
        CK(cudaStreamWaitEvent(st, forked, 0));
      }, [&](int dir) { dir_now = dir; });
    }
    return 0;
  }
  if (!orders) {
    sm(block_copy<512, 4, true>, 512, 4, "512/4/cs");  // kvferry's kernel today
    sm(block_copy<512, 4, true>, 512, 2, "512/4/cs");
    sm(block_copy<512, 8, true>, 512, 4, "512/8/cs");
    sm(block_copy<512, 4, false>, 512, 4, "512/4/def");
    sm(block_copy<256, 8, true>, 256, 8, "256/8/cs");
    sm(block_copy<256, 4, true>, 256, 8, "256/4/cs");
    sm(block_copy<1024, 4, true>, 1024, 2, "1024/4/cs");
    sm(block_copy<128, 8, true>, 128, 16, "128/8/cs");
    variant("warp U8 G8", [&](std::uint32_t n) { warp_copy<8><<<8 * sms, 256, 0, st>>>(table, n); }, [](int) {});
    variant("warp U4 G8", [&](std::uint32_t n) { warp_copy<4><<<8 * sms, 256, 0, st>>>(table, n); }, [](int) {});
  }
  auto bulk = [&](auto kernel, int stages, std::uint32_t chunk, unsigned per_sm) {
    const int smem = stages * static_cast<int>(chunk);
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    variant("bulk " + std::to_string(stages) + "x" + std::to_string(chunk >> 10) + "K G" + std::to_string(per_sm),
            [&, kernel, smem, per_sm](std::uint32_t n) { kernel<<<per_sm * sms, 32, smem, st>>>(table, n); },
            [](int) {});
  };
  if (!orders) {
    bulk(bulk_copy<4, 16384>, 4, 16384, 2);
    bulk(bulk_copy<4, 16384>, 4, 16384, 3);
    bulk(bulk_copy<8, 8192>, 8, 8192, 3);
    bulk(bulk_copy<2, 32768>, 2, 32768, 3);
    bulk(bulk_copy<6, 16384>, 6, 16384, 2);
    return 0;
  }
  // Does the order of the items matter (remote page locality), or is it SM against copy
  // engine? Same items sorted by the remote address; then one contiguous run per side.
  auto by_remote = [](std::vector<Item>& v, bool remote_is_dst) {
    std::sort(v.begin(), v.end(), [&](const Item& x, const Item& y) {
      return remote_is_dst ? x.dst < y.dst : x.src < y.src;
    });
  };
  by_remote(write, true);
  by_remote(read, false);
  sm(block_copy<512, 4, true>, 512, 4, "512/4/cs sorted");
  bulk(bulk_copy<2, 32768>, 2, 32768, 3);
  // Sorted by the local address instead.
  by_remote(write, false);
  by_remote(read, true);
  sm(block_copy<512, 4, true>, 512, 4, "512/4/cs local-sorted");
  // Contiguous: block k of layer l at the same place on both sides, in order.
  for (std::size_t i = 0; i < write.size(); ++i) {
    write[i] = Item{reinterpret_cast<std::uint64_t>(g0 + i * block), reinterpret_cast<std::uint64_t>(g1 + i * block), block};
    read[i] = Item{write[i].dst, write[i].src, block};
  }
  sm(block_copy<512, 4, true>, 512, 4, "512/4/cs contiguous");
  bulk(bulk_copy<2, 32768>, 2, 32768, 3);
  // Contiguous with 1 MiB items.
  {
    std::vector<Item> w, r;
    for (std::uint64_t off = 0; off < bytes; off += 1u << 20) {
      const std::uint64_t n = std::min<std::uint64_t>(1u << 20, bytes - off);
      w.push_back(Item{reinterpret_cast<std::uint64_t>(g0 + off), reinterpret_cast<std::uint64_t>(g1 + off), n});
      r.push_back(Item{w.back().dst, w.back().src, n});
    }
    write = w;
    read = r;
    sm(block_copy<512, 4, true>, 512, 4, "512/4/cs contig 1MiB");
  }
  return 0;
}
