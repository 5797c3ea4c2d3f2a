// kvferry_tp_kernel_bench: the heterogeneous-TP head kernels against the copy engines, in
// one run on one GPU. Mistral-Small-3.1 geometry (40 layers, 8 KV heads, head_dim 128,
// bf16, 16-token blocks), a prompt of --tokens tokens in scattered blocks of vram pools:
//   prefill TP 2 -> decode TP 1: a prefill rank (4 heads) gathers its heads; the decode
//     rank (8 heads) scatters them into its second bucket, heads [4, 8);
//   prefill TP 1 -> decode TP 2: the prefill rank (8 heads) gathers heads [4, 8) for decode
//     rank 1; a decode rank (4 heads) scatters all of them.
// Gathers into pinned host memory (the kernel writing it directly, or through 64 MiB of
// device scratch and the copy engine) are compared with a contiguous pinned device->host
// cudaMemcpyAsync of the same bytes, timed in the same run; scatters from pinned memory
// with host->device; gathers into device staging with device->device.
// Medians of --iters runs after --warmup, ceiling and kernel interleaved. Every case is
// then verified: random pools, poisoned destination, byte comparison with kvferry's CPU
// gather/scatter over the host copy (itself checked element by element in CI).
//
// --cpu measures the CPU path instead (dram pools, no GPU needed): the same cases with 1
// and 2 threads, against one-thread memcpy of the same bytes between contiguous buffers.
//
//   kvferry_tp_kernel_bench [--device N] [--tokens N] [--iters N] [--warmup N]
//                           [--layouts vllm-nhd,sglang] [--json] [--cpu]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kvferry/kv/kv_head_copy.h"
#include "kvferry/kv/kv_pool.h"

namespace {

using namespace kvferry;

#define CHECK_CUDA(expr)                                                                         \
  do {                                                                                           \
    cudaError_t e_ = (expr);                                                                     \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(2);                                                                              \
    }                                                                                            \
  } while (0)

void check(const Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.to_string().c_str());
    std::exit(2);
  }
}

struct Options {
  int device = 0;
  std::uint64_t tokens = 4096;
  int iters = 10;
  int warmup = 2;
  bool json = false;
  bool cpu = false;
  std::vector<KvArrangement> layouts = {KvArrangement::kVllmNhd, KvArrangement::kSglangTokenSlots};
};

void fill_random(std::uint8_t* p, std::size_t n, std::uint64_t seed) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {  // splitmix64
    std::uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    std::memcpy(p + i, &z, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<std::uint8_t>(i * 131 + seed);
}

// A vram pool and the host copy of its bytes.
struct Pool {
  KvLayout layout;
  void* device = nullptr;
  std::vector<std::uint8_t> host;
  KvPool vram() const {
    return KvPool::create_contiguous(layout, MemoryKind::kVram, reinterpret_cast<std::uint64_t>(device))
        .value();
  }
  KvPool dram() const {
    return KvPool::create_contiguous(layout, MemoryKind::kDram, reinterpret_cast<std::uint64_t>(host.data()))
        .value();
  }
};

Pool make_pool(KvArrangement a, std::uint32_t heads, std::uint32_t blocks, std::uint64_t seed) {
  KvGeometry g{40, heads, 128, 16, KvDtype::kBf16};
  Pool p{KvLayout::create(g, a, blocks).value(), nullptr, {}};
  CHECK_CUDA(cudaMalloc(&p.device, p.layout.pool_bytes()));
  p.host.resize(p.layout.pool_bytes());
  fill_random(p.host.data(), p.host.size(), seed);
  CHECK_CUDA(cudaMemcpy(p.device, p.host.data(), p.host.size(), cudaMemcpyHostToDevice));
  return p;
}

struct Row {
  std::string name, layout, ceiling;
  std::uint64_t bytes = 0;
  double kernel_ms = 0, ceiling_ms = 0, accept = 0;
  double cpu_ratio = 0;  // --cpu: memcpy's process CPU time over the op's (robust to a busy machine)
  bool verified = false;
  double gbps() const { return bytes / kernel_ms / 1e6; }
  double ceiling_gbps() const { return bytes / ceiling_ms / 1e6; }
  double ratio() const { return ceiling_ms / kernel_ms; }
};

Row make_row(const char* name, KvArrangement a, const char* ceiling, std::uint64_t bytes, double accept) {
  Row r;
  r.name = name;
  r.layout = std::string(to_string(a));
  r.ceiling = ceiling;
  r.bytes = bytes;
  r.accept = accept;
  return r;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Times `ceiling` and `kernel` alternately on `stream`; medians in ms.
template <typename C, typename K>
void time_pair(const Options& o, cudaStream_t stream, C ceiling, K kernel, Row* row) {
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  std::vector<double> cs, ks;
  for (int i = 0; i < o.warmup + o.iters; ++i) {
    for (int which = 0; which < 2; ++which) {
      CHECK_CUDA(cudaEventRecord(a, stream));
      if (which == 0)
        ceiling();
      else
        kernel();
      CHECK_CUDA(cudaEventRecord(b, stream));
      CHECK_CUDA(cudaEventSynchronize(b));
      float ms = 0;
      CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
      if (i >= o.warmup) (which == 0 ? cs : ks).push_back(ms);
    }
  }
  row->ceiling_ms = median(cs);
  row->kernel_ms = median(ks);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
}

std::vector<Row> run_layout(const Options& o, KvArrangement a, cudaStream_t stream) {
  const std::uint32_t used = static_cast<std::uint32_t>((o.tokens + 15) / 16);
  const std::uint32_t blocks = 2 * used;  // the request's blocks scattered over twice as many
  Pool p4 = make_pool(a, 4, blocks, 1), p8 = make_pool(a, 8, blocks, 2);
  std::vector<std::uint32_t> ids(blocks);
  std::iota(ids.begin(), ids.end(), 0u);
  std::shuffle(ids.begin(), ids.end(), std::mt19937_64(3));
  ids.resize(used);
  const KvTokenWindow w{ids, 0, o.tokens};
  const std::uint64_t bytes = KvStagingShape::of(p4.layout, 4, o.tokens).bytes();
  void *pinned = nullptr, *dev = nullptr, *dev2 = nullptr;
  CHECK_CUDA(cudaHostAlloc(&pinned, bytes, cudaHostAllocPortable | cudaHostAllocMapped));
  CHECK_CUDA(cudaMalloc(&dev, bytes));
  CHECK_CUDA(cudaMalloc(&dev2, bytes));
  auto* host = static_cast<std::uint8_t*>(pinned);
  const KvStaging pinned_st{reinterpret_cast<std::uint64_t>(pinned), bytes, MemoryKind::kDram, 0};
  const KvStaging dev_st{reinterpret_cast<std::uint64_t>(dev), bytes, MemoryKind::kVram,
                         static_cast<std::uint32_t>(o.device)};
  auto d2h = [&] { CHECK_CUDA(cudaMemcpyAsync(pinned, dev, bytes, cudaMemcpyDeviceToHost, stream)); };
  auto h2d = [&] { CHECK_CUDA(cudaMemcpyAsync(dev, pinned, bytes, cudaMemcpyHostToDevice, stream)); };
  auto d2d = [&] { CHECK_CUDA(cudaMemcpyAsync(dev2, dev, bytes, cudaMemcpyDeviceToDevice, stream)); };
  std::vector<std::uint8_t> want(bytes), got(bytes);
  std::vector<Row> rows;

  // Pinned staging reached two ways: the kernel writing (reading) host memory over the bus,
  // or the kernel working on 64 MiB of device scratch piece by piece while the copy engine
  // moves the previous piece (KvHeadCopyOptions::device_scratch).
  void* scratch = nullptr;
  const std::uint64_t scratch_bytes = 64ull << 20;
  CHECK_CUDA(cudaMalloc(&scratch, scratch_bytes));
  KvHeadCopyOptions through;
  through.device_scratch = KvStaging{reinterpret_cast<std::uint64_t>(scratch), scratch_bytes,
                                     MemoryKind::kVram, static_cast<std::uint32_t>(o.device)};
  const KvHeadCopyOptions direct;

  enum class To { kPinned, kScratch, kDevice };
  struct Gather {
    const char* name;
    const Pool* pool;
    HeadRange heads;
    To to;
  };
  for (const Gather& c : {Gather{"2->1 gather -> pinned", &p4, {0, 4}, To::kPinned},
                          Gather{"1->2 gather -> pinned", &p8, {4, 4}, To::kPinned},
                          Gather{"2->1 gather -> scratch -> pinned", &p4, {0, 4}, To::kScratch},
                          Gather{"1->2 gather -> scratch -> pinned", &p8, {4, 4}, To::kScratch},
                          Gather{"2->1 gather -> device", &p4, {0, 4}, To::kDevice},
                          Gather{"1->2 gather -> device", &p8, {4, 4}, To::kDevice}}) {
    Row r = make_row(c.name, a, c.to == To::kDevice ? "d2d" : "d2h", bytes, c.to == To::kDevice ? 0 : 0.95);
    const KvPool pool = c.pool->vram();
    auto kernel = [&] {
      check(enqueue_gather_kv_heads(pool, w, c.heads, c.to == To::kDevice ? dev_st : pinned_st, stream,
                                    c.to == To::kScratch ? through : direct),
            c.name);
    };
    if (c.to == To::kDevice)
      time_pair(o, stream, d2d, kernel, &r);
    else
      time_pair(o, stream, d2h, kernel, &r);
    // Verify: poisoned staging, one more gather, the CPU's gather of the host copy.
    check(
        gather_kv_heads(c.pool->dram(), w, c.heads,
                        KvStaging{reinterpret_cast<std::uint64_t>(want.data()), bytes, MemoryKind::kDram, 0}),
        "cpu gather");
    CHECK_CUDA(cudaMemsetAsync(dev, 0xA5, bytes, stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    std::memset(host, 0xA5, bytes);
    kernel();
    CHECK_CUDA(cudaStreamSynchronize(stream));
    if (c.to == To::kDevice) CHECK_CUDA(cudaMemcpy(got.data(), dev, bytes, cudaMemcpyDeviceToHost));
    r.verified = std::memcmp(c.to == To::kDevice ? got.data() : host, want.data(), bytes) == 0;
    rows.push_back(r);
  }

  struct Scatter {
    const char* name;
    Pool* pool;
    HeadRange heads;
    bool via_scratch;
  };
  for (const Scatter& c : {Scatter{"2->1 scatter <- pinned", &p8, {4, 4}, false},
                           Scatter{"1->2 scatter <- pinned", &p4, {0, 4}, false},
                           Scatter{"2->1 scatter <- scratch <- pinned", &p8, {4, 4}, true},
                           Scatter{"1->2 scatter <- scratch <- pinned", &p4, {0, 4}, true}}) {
    Row r = make_row(c.name, a, "h2d", bytes, 0.93);
    fill_random(host, bytes, 7);
    const KvPool pool = c.pool->vram();
    auto kernel = [&] {
      check(enqueue_scatter_kv_heads(pinned_st, pool, w, c.heads, stream, c.via_scratch ? through : direct),
            c.name);
    };
    time_pair(o, stream, h2d, kernel, &r);
    // Verify: poisoned pool, one more scatter, the CPU's scatter into the poisoned host copy.
    std::memset(c.pool->host.data(), 0xA5, c.pool->host.size());
    check(scatter_kv_heads(pinned_st, c.pool->dram(), w, c.heads), "cpu scatter");
    CHECK_CUDA(cudaMemsetAsync(c.pool->device, 0xA5, c.pool->host.size(), stream));
    CHECK_CUDA(cudaMemsetAsync(scratch, 0xA5, scratch_bytes, stream));
    kernel();
    CHECK_CUDA(cudaStreamSynchronize(stream));
    std::vector<std::uint8_t> pool_bytes(c.pool->host.size());
    CHECK_CUDA(cudaMemcpy(pool_bytes.data(), c.pool->device, pool_bytes.size(), cudaMemcpyDeviceToHost));
    r.verified = pool_bytes == c.pool->host;
    rows.push_back(r);
  }
  cudaFree(scratch);
  cudaFreeHost(pinned);
  cudaFree(dev);
  cudaFree(dev2);
  cudaFree(p4.device);
  cudaFree(p8.device);
  return rows;
}

// The CPU path: dram pools, staging in plain host memory.
std::vector<Row> run_layout_cpu(const Options& o, KvArrangement a) {
  const std::uint32_t used = static_cast<std::uint32_t>((o.tokens + 15) / 16);
  const std::uint32_t blocks = 2 * used;
  Pool p4{KvLayout::create(KvGeometry{40, 4, 128, 16, KvDtype::kBf16}, a, blocks).value(), nullptr, {}};
  Pool p8{KvLayout::create(KvGeometry{40, 8, 128, 16, KvDtype::kBf16}, a, blocks).value(), nullptr, {}};
  for (Pool* p : {&p4, &p8}) {
    p->host.resize(p->layout.pool_bytes());
    fill_random(p->host.data(), p->host.size(), 1);
  }
  std::vector<std::uint32_t> ids(blocks);
  std::iota(ids.begin(), ids.end(), 0u);
  std::shuffle(ids.begin(), ids.end(), std::mt19937_64(3));
  ids.resize(used);
  const KvTokenWindow w{ids, 0, o.tokens};
  const std::uint64_t bytes = KvStagingShape::of(p4.layout, 4, o.tokens).bytes();
  std::vector<std::uint8_t> staging(bytes), first(bytes), flat(bytes);
  fill_random(flat.data(), bytes, 5);
  fill_random(staging.data(), bytes, 6);
  const KvStaging st{reinterpret_cast<std::uint64_t>(staging.data()), bytes, MemoryKind::kDram, 0};
  double cpu_used = 0;  // process CPU ms of the last timed call
  auto seconds = [&](auto&& f) {
    timespec c0{}, c1{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    cpu_used = (c1.tv_sec - c0.tv_sec) * 1e3 + (c1.tv_nsec - c0.tv_nsec) / 1e6;
    return ms;
  };
  struct Case {
    const char* name;
    Pool* pool;
    HeadRange heads;
    bool gather;
  };
  std::vector<Row> rows;
  for (const Case& c : {Case{"2->1 gather", &p4, {0, 4}, true}, Case{"1->2 gather", &p8, {4, 4}, true},
                        Case{"2->1 scatter", &p8, {4, 4}, false}, Case{"1->2 scatter", &p4, {0, 4}, false}})
    for (std::uint32_t threads : {1u, 2u}) {
      Row r = make_row(c.name, a, "memcpy", bytes, 0);
      r.name += threads == 1 ? " (1 thread)" : " (2 threads)";
      KvHeadCopyOptions opt;
      opt.threads = threads;
      const KvPool pool = c.pool->dram();
      std::vector<double> cs, ks, ccpu, kcpu;
      for (int i = 0; i < o.warmup + o.iters; ++i) {
        const double cm = seconds([&] { std::memcpy(staging.data(), flat.data(), bytes); });
        const double cm_cpu = cpu_used;
        const double km = seconds([&] {
          check(c.gather ? gather_kv_heads(pool, w, c.heads, st, opt)
                         : scatter_kv_heads(st, pool, w, c.heads, opt),
                c.name);
        });
        if (i >= o.warmup) {
          cs.push_back(cm);
          ks.push_back(km);
          ccpu.push_back(cm_cpu);
          kcpu.push_back(cpu_used);
        }
      }
      r.cpu_ratio = median(ccpu) / median(kcpu);
      r.ceiling_ms = median(cs);
      r.kernel_ms = median(ks);
      // Verified: 2 threads give the bytes 1 thread gave (both checked element by element in CI).
      if (c.gather) {
        check(gather_kv_heads(pool, w, c.heads, st, opt), c.name);
        if (threads == 1) first = staging;
        r.verified = staging == first;
      } else {
        r.verified = true;  // the scatter's bytes are checked by the CI tests, not here
      }
      rows.push_back(r);
    }
  return rows;
}

bool parse(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--json") {
      o->json = true;
    } else if (a == "--cpu") {
      o->cpu = true;
    } else if (a == "--device" || a == "--tokens" || a == "--iters" || a == "--warmup") {
      const char* v = next();
      if (!v) return false;
      const long n = std::strtol(v, nullptr, 10);
      if (n < 0 || (n == 0 && a != "--device" && a != "--warmup")) return false;
      if (a == "--device") o->device = static_cast<int>(n);
      if (a == "--tokens") o->tokens = static_cast<std::uint64_t>(n);
      if (a == "--iters") o->iters = static_cast<int>(n);
      if (a == "--warmup") o->warmup = static_cast<int>(n);
    } else if (a == "--layouts") {
      const char* v = next();
      if (!v) return false;
      o->layouts.clear();
      std::string list = v;
      for (std::size_t at = 0; at <= list.size();) {
        const std::size_t comma = std::min(list.find(',', at), list.size());
        KvArrangement k;
        if (!parse_kv_arrangement(list.substr(at, comma - at), &k) || k == KvArrangement::kMla) return false;
        o->layouts.push_back(k);
        at = comma + 1;
      }
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, &o)) {
    std::fprintf(stderr,
                 "usage: kvferry_tp_kernel_bench [--device N] [--tokens N] [--iters N] [--warmup N] "
                 "[--layouts vllm-nhd,sglang,...] [--json] [--cpu]\n");
    return 2;
  }
  cudaDeviceProp prop{};
  cudaStream_t stream = nullptr;
  std::vector<Row> rows;
  if (o.cpu) {
    std::snprintf(prop.name, sizeof prop.name, "CPU");
  } else {
    CHECK_CUDA(cudaSetDevice(o.device));
    CHECK_CUDA(cudaGetDeviceProperties(&prop, o.device));
    CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  }
  for (KvArrangement a : o.layouts) {
    auto r = o.cpu ? run_layout_cpu(o, a) : run_layout(o, a, stream);
    rows.insert(rows.end(), r.begin(), r.end());
  }
  bool ok = true;
  if (!o.json) {
    if (o.cpu)
      std::printf("CPU path, %u hardware threads", std::thread::hardware_concurrency());
    else
      std::printf("GPU %d %s, %d SMs", o.device, prop.name, prop.multiProcessorCount);
    std::printf(
        "; Mistral-Small-3.1 (40 layers, 8 KV heads, dim 128, bf16, 16-token blocks), %llu tokens, "
        "scattered blocks; medians of %d\n",
        static_cast<unsigned long long>(o.tokens), o.iters);
    std::printf("%-32s %-9s %9s %9s %8s %-6s %9s %7s %7s %8s%s\n", "case", "layout", "MB", "ms", "GB/s",
                "ceil", "GB/s", "ratio", "accept", "verified", o.cpu ? "  cpu-time ratio" : "");
  }
  for (const Row& r : rows) {
    const bool pass = r.accept == 0 || r.ratio() >= r.accept;
    ok = ok && pass && r.verified;
    if (o.json) {
      std::printf(
          "{\"case\":\"%s\",\"layout\":\"%s\",\"tokens\":%llu,\"bytes\":%llu,\"kernel_ms\":%.4f,\"gbps\":%."
          "2f,"
          "\"ceiling\":\"%s\",\"ceiling_ms\":%.4f,\"ceiling_gbps\":%.2f,\"ratio\":%.4f,\"accept\":%.2f,"
          "\"cpu_time_ratio\":%.4f,\"pass\":%s,\"verified\":%s,\"gpu\":\"%s\"}\n",
          r.name.c_str(), r.layout.c_str(), static_cast<unsigned long long>(o.tokens),
          static_cast<unsigned long long>(r.bytes), r.kernel_ms, r.gbps(), r.ceiling.c_str(), r.ceiling_ms,
          r.ceiling_gbps(), r.ratio(), r.accept, r.cpu_ratio, pass ? "true" : "false",
          r.verified ? "true" : "false", prop.name);
    } else {
      std::printf("%-32s %-9s %9.1f %9.3f %8.1f %-6s %9.1f %7.3f %7s %8s", r.name.c_str(), r.layout.c_str(),
                  r.bytes / 1e6, r.kernel_ms, r.gbps(), r.ceiling.c_str(), r.ceiling_gbps(), r.ratio(),
                  r.accept == 0 ? "-" : (pass ? "ok" : "FAIL"), r.verified ? "yes" : "NO");
      if (o.cpu) std::printf("  %15.3f", r.cpu_ratio);
      std::printf("\n");
    }
  }
  if (stream) cudaStreamDestroy(stream);
  return ok ? 0 : 1;
}
