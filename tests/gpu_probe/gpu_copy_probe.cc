// kvferry_gpu_probe: a diagnostic, not a test and not a benchmark target. It takes the
// cuda_ipc acceptance shape (40 layers x 1,000 scattered 64 KiB blocks, GPU0 <-> GPU1)
// apart in one process, with peer access instead of IPC handles, to separate what the
// copy kernel costs on the GPU from what a post costs on the host:
//   ceiling   one contiguous cudaMemcpyPeerAsync of the same bytes
//   kernel    the copy kernel over a table already on the GPU, for several grid sizes
//   batch     one cudaMemcpyBatchAsync of every block (the copy engines)
//   split     the kernel and the copy engines at once, the engines taking a share
//   host      building, staging and uploading the 40,000-entry table
// Every variant's destination is checked against the source once.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/copy_kernels.h"

namespace {

using Clock = std::chrono::steady_clock;
using kvferry::detail::cuda::CopyItem;

#define CK(x)                                                                    \
  do {                                                                           \
    cudaError_t e_ = (x);                                                        \
    if (e_ != cudaSuccess) {                                                     \
      std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_));              \
      std::exit(1);                                                              \
    }                                                                            \
  } while (0)

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Setup {
  std::uint64_t block = 64u << 10;
  int layers = 40, blocks = 1000;
  std::uint64_t bytes() const { return std::uint64_t(layers) * blocks * block; }
};

// Best-of-`reps` GB/s of `run` (which enqueues on the given streams), after a warm-up.
template <typename F>
double best_gbps(std::uint64_t bytes, int reps, F run) {
  double best = 0;
  for (int r = 0; r <= reps; ++r) {
    CK(cudaDeviceSynchronize());
    const auto t0 = Clock::now();
    run();
    CK(cudaDeviceSynchronize());
    const double s = seconds_since(t0);
    if (r > 0) best = std::max(best, double(bytes) / s / 1e9);
  }
  return best;
}

void batch_copy(const std::vector<CopyItem>& items, std::size_t from, std::size_t to, cudaStream_t s) {
  if (from >= to) return;
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
  std::size_t idx = 0;
  CK(cudaMemcpyBatchAsync(d.data(), src.data(), n.data(), d.size(), &attr, &idx, 1, s));
}

}  // namespace

int main(int argc, char** argv) {
  Setup st;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--layers") st.layers = std::atoi(argv[i + 1]);
    if (k == "--blocks") st.blocks = std::atoi(argv[i + 1]);
    if (k == "--block") st.block = std::strtoull(argv[i + 1], nullptr, 10);
  }
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus < 2) {
    std::fprintf(stderr, "kvferry_gpu_probe: needs 2 GPUs\n");
    return 2;
  }
  const std::uint64_t bytes = st.bytes();
  const std::uint64_t pool_blocks = 2ull * st.blocks;
  const std::uint64_t pool_bytes = std::uint64_t(st.layers) * pool_blocks * st.block;
  std::uint8_t *g0 = nullptr, *g1 = nullptr;
  CK(cudaSetDevice(1));
  CK(cudaMalloc(&g1, pool_bytes));
  CK(cudaDeviceEnablePeerAccess(0, 0));
  CK(cudaSetDevice(0));
  CK(cudaMalloc(&g0, pool_bytes));
  CK(cudaDeviceEnablePeerAccess(1, 0));
  {
    std::vector<std::uint8_t> host(pool_bytes);
    std::mt19937_64 rng(7);
    for (std::uint64_t i = 0; i + 8 <= pool_bytes; i += 8) {
      std::uint64_t v = rng();
      std::memcpy(host.data() + i, &v, 8);
    }
    CK(cudaMemcpy(g0, host.data(), pool_bytes, cudaMemcpyHostToDevice));
  }
  // Scattered ids, different on each side, as kvferry bench chooses them.
  std::mt19937 rng(11);
  std::vector<std::uint32_t> a(pool_blocks), b(pool_blocks);
  std::iota(a.begin(), a.end(), 0u);
  std::iota(b.begin(), b.end(), 0u);
  std::shuffle(a.begin(), a.end(), rng);
  std::shuffle(b.begin(), b.end(), rng);
  std::vector<CopyItem> write, read;  // write: GPU0 -> GPU1; read: GPU1 -> GPU0 (both launched on GPU0)
  for (int l = 0; l < st.layers; ++l)
    for (int i = 0; i < st.blocks; ++i) {
      const std::uint64_t s = (std::uint64_t(l) * pool_blocks + a[i]) * st.block;
      const std::uint64_t d = (std::uint64_t(l) * pool_blocks + b[i]) * st.block;
      write.push_back(CopyItem{reinterpret_cast<std::uint64_t>(g0 + s), reinterpret_cast<std::uint64_t>(g1 + d), st.block});
      read.push_back(CopyItem{reinterpret_cast<std::uint64_t>(g1 + d), reinterpret_cast<std::uint64_t>(g0 + s), st.block});
    }
  cudaStream_t s1, s2;
  CK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  CK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  CopyItem* table = nullptr;
  CK(cudaMalloc(&table, write.size() * sizeof(CopyItem)));

  std::printf("kvferry_gpu_probe: %d layers x %d scattered blocks x %llu B = %.3f GB, GPU0 <-> GPU1, one process\n",
              st.layers, st.blocks, (unsigned long long)st.block, bytes / 1e9);
  const double ceil_w = best_gbps(bytes, 3, [&] { CK(cudaMemcpyPeerAsync(g1, 1, g0, 0, bytes, s1)); });
  const double ceil_r = best_gbps(bytes, 3, [&] { CK(cudaMemcpyPeerAsync(g0, 0, g1, 1, bytes, s1)); });
  std::printf("%-28s %10s %10s\n", "variant", "write", "read");
  std::printf("%-28s %7.1f GB/s %7.1f GB/s\n", "ceiling (peer copy)", ceil_w, ceil_r);
  auto row = [&](const std::string& name, double w, double r) {
    std::printf("%-28s %7.1f %4.0f%% %5.1f %4.0f%%\n", name.c_str(), w, 100 * w / ceil_w, r, 100 * r / ceil_r);
  };
  auto kernel_run = [&](std::size_t n, unsigned blocks) {
    return [&, n, blocks] {
      CK(static_cast<cudaError_t>(kvferry::detail::cuda::launch_copy_items(table, std::uint32_t(n), s1, blocks)));
    };
  };
  for (unsigned blocks : {132u, 264u, 396u, 528u, 1056u}) {
    double r[2];
    for (int dir = 0; dir < 2; ++dir) {
      const auto& items = dir == 0 ? write : read;
      CK(cudaMemcpy(table, items.data(), items.size() * sizeof(CopyItem), cudaMemcpyHostToDevice));
      r[dir] = best_gbps(bytes, 5, kernel_run(items.size(), blocks));
    }
    row("kernel, grid " + std::to_string(blocks), r[0], r[1]);
  }
  {
    double r[2];
    for (int dir = 0; dir < 2; ++dir) {
      const auto& items = dir == 0 ? write : read;
      r[dir] = best_gbps(bytes, 3, [&] { batch_copy(items, 0, items.size(), s1); });
    }
    row("batch (copy engines)", r[0], r[1]);
  }
  for (double share : {0.05, 0.10, 0.15, 0.20, 0.25, 0.30}) {
    for (unsigned blocks : {264u, 528u}) {
      double r[2];
      for (int dir = 0; dir < 2; ++dir) {
        const auto& items = dir == 0 ? write : read;
        const std::size_t k = items.size() - std::size_t(share * items.size());
        CK(cudaMemcpy(table, items.data(), k * sizeof(CopyItem), cudaMemcpyHostToDevice));
        r[dir] = best_gbps(bytes, 5, [&] {
          batch_copy(items, k, items.size(), s2);
          CK(static_cast<cudaError_t>(kvferry::detail::cuda::launch_copy_items(table, std::uint32_t(k), s1, blocks)));
        });
      }
      char name[64];
      std::snprintf(name, sizeof name, "split %.0f%% engines, grid %u", share * 100, blocks);
      row(name, r[0], r[1]);
    }
  }
  // Host cost of one post's table: build, stage in pinned memory, upload.
  {
    void* pinned = nullptr;
    CK(cudaMallocHost(&pinned, write.size() * sizeof(CopyItem)));
    double best = 1e9;
    for (int r = 0; r < 5; ++r) {
      const auto t0 = Clock::now();
      std::vector<CopyItem> items;
      items.reserve(write.size());
      for (const auto& it : write) kvferry::detail::cuda::append_items(&items, it.src, it.dst, it.length);
      std::memcpy(pinned, items.data(), items.size() * sizeof(CopyItem));
      CK(cudaMemcpyAsync(table, pinned, items.size() * sizeof(CopyItem), cudaMemcpyHostToDevice, s1));
      CK(cudaStreamSynchronize(s1));
      best = std::min(best, seconds_since(t0));
    }
    std::printf("host: build + stage + upload of a %zu-entry table: %.3f ms (the copy itself: %.3f ms at the ceiling)\n",
                write.size(), best * 1e3, bytes / ceil_w / 1e6);
    cudaFreeHost(pinned);
  }
  // Check one variant byte for byte: the last split wrote GPU1 from GPU0 (write) then
  // read back; compare GPU0's source blocks with GPU1's destination blocks.
  CK(cudaMemcpy(table, write.data(), write.size() * sizeof(CopyItem), cudaMemcpyHostToDevice));
  CK(cudaMemset(g1, 0xA5, pool_bytes));
  CK(static_cast<cudaError_t>(kvferry::detail::cuda::launch_copy_items(table, std::uint32_t(write.size()), s1, 0)));
  CK(cudaDeviceSynchronize());
  std::vector<std::uint8_t> x(st.block), y(st.block);
  bool ok = true;
  for (std::size_t i = 0; i < write.size() && ok; i += 97) {
    CK(cudaMemcpy(x.data(), reinterpret_cast<void*>(write[i].src), st.block, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(y.data(), reinterpret_cast<void*>(write[i].dst), st.block, cudaMemcpyDeviceToHost));
    ok = x == y;
  }
  std::printf("verified (kernel write, every 97th block): %s\n", ok ? "yes" : "FAILED");
  return ok ? 0 : 3;
}
