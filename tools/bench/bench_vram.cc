// `kvferry bench --mem vram`: KV blocks from a GPU pool of this process to a pool of
// another process (GPU memory, or host memory with --peer-mem dram), through any
// backend: cuda_ipc directly, tcp and shm staged through pinned host memory. The
// ceilings are measured in the same run over the same bytes:
//   cuda_ipc: a contiguous cudaMemcpyPeerAsync between the same two GPUs;
//   shm:      a contiguous pinned device->host (write) or host->device (read) copy;
//   tcp:      a plain TCP stream between the same two processes (the pinned copy is
//             printed beside it).
// Verification (--verify): fresh pattern data, a poisoned destination, every byte
// compared (write: the target's checksum of its whole pool against the expected image;
// read: our whole pool downloaded and compared). The target process: bench_vram.h.
#include <cinttypes>
#include <cstdio>

#include "bench/bench_roles.h"

#ifndef KVFERRY_HAVE_CUDA
namespace kvferry::cli {
int run_vram_bench(const BenchOptions&) {
  std::fprintf(stderr, "kvferry bench: --mem vram needs a build with CUDA (KVFERRY_ENABLE_CUDA)\n");
  return 2;
}
}  // namespace kvferry::cli
#else
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_vram.h"
#include "bench/bench_vram_pool.h"
#include "common/block_choice.h"
#include "common/cli_util.h"

namespace kvferry::cli {
namespace {

using namespace std::chrono_literals;

struct Ceilings {
  double write = 0, read = 0;            // what the ratio is taken against
  double pcie_write = 0, pcie_read = 0;  // pinned copies (staging paths), 0 for cuda_ipc
  const char* kind = "";
};

// The ceiling copies `bytes` contiguous bytes from our pool; per-layer tensors are each
// smaller, so then a scratch buffer of that size stands in for it.
struct CeilingSource {
  void* data = nullptr;
  void* owned = nullptr;
  ~CeilingSource() {
    if (owned) cudaFree(owned);
  }
};

Result<Ceilings> measure_ceilings(const BenchOptions& o, Agent& a, VramPool& pool, int peer_device,
                                  std::uint64_t bytes) {
  Ceilings c;
  CeilingSource source{pool.data()};
  if (!pool.one_allocation()) {
    cudaSetDevice(o.device);
    if (cudaMalloc(&source.owned, bytes) != cudaSuccess) return IoError("cudaMalloc of the ceiling's source failed");
    source.data = source.owned;
  }
  if (o.backend == "cuda_ipc") {
    c.kind = "peer copy";
    void* peer_buf = nullptr;
    cudaSetDevice(peer_device);
    if (cudaMalloc(&peer_buf, bytes) != cudaSuccess) return IoError("cudaMalloc of the ceiling's buffer failed");
    c.write = peer_copy_ceiling(o.device, source.data, peer_device, peer_buf, bytes, o.ceiling_reps);
    c.read = peer_copy_ceiling(peer_device, peer_buf, o.device, source.data, bytes, o.ceiling_reps);
    cudaSetDevice(peer_device);
    cudaFree(peer_buf);
    return c;
  }
  c.pcie_write = pinned_copy_ceiling(o.device, source.data, bytes, true, o.ceiling_reps);
  c.pcie_read = pinned_copy_ceiling(o.device, source.data, bytes, false, o.ceiling_reps);
  if (o.backend != "tcp") {
    c.kind = "pinned copy";
    c.write = c.pcie_write;
    c.read = c.pcie_read;
    return c;
  }
  c.kind = "tcp stream";
  KVF_ASSIGN_OR_RETURN(c.write, socket_stream_ceiling(a, bytes, true, o.ceiling_reps));
  KVF_ASSIGN_OR_RETURN(c.read, socket_stream_ceiling(a, bytes, false, o.ceiling_reps));
  return c;
}

// --inflight K: K requests in flight at once, as an engine moving several prompts keeps
// them: each new one is created (fresh) or taken from K re-posted ones and posted while
// earlier ones copy; the oldest is waited for first. The timed figure is throughput: the
// timed requests' wall time / their number (in `ms`, one entry per request).
template <typename Make>
Status run_in_flight(const BenchOptions& o, Make& make, std::vector<double>& ms, std::vector<double>& post_ms,
                     std::vector<double>& cpu_us) {
  const int depth = o.inflight, total = o.warmup + o.iterations;
  std::vector<std::optional<TransferRequest>> slot(static_cast<std::size_t>(depth));
  std::deque<int> flying;  // slots in post order
  auto finish_oldest = [&]() -> Status {
    TransferRequest& r = *slot[static_cast<std::size_t>(flying.front())];
    flying.pop_front();
    KVF_RETURN_IF_ERROR(r.wait(60s));
    post_ms.push_back(static_cast<double>(r.telemetry().post_ns) / 1e6);
    return Status::Ok();
  };
  auto start = Clock::now();
  for (int i = 0; i < total; ++i) {
    if (i == o.warmup) {
      while (!flying.empty()) KVF_RETURN_IF_ERROR(finish_oldest());
      post_ms.clear();
      start = Clock::now();
    }
    if (static_cast<int>(flying.size()) >= depth) KVF_RETURN_IF_ERROR(finish_oldest());
    const int k = i % depth;
    auto& r = slot[static_cast<std::size_t>(k)];
    const double cpu0 = thread_cpu_micros();
    if (o.fresh_requests || !r) {
      auto made = make();
      if (!made.ok()) return made.status();
      r.emplace(std::move(made).value());
    }
    KVF_RETURN_IF_ERROR(r->post());
    if (i >= o.warmup) cpu_us.push_back(thread_cpu_micros() - cpu0);
    flying.push_back(k);
  }
  while (!flying.empty()) KVF_RETURN_IF_ERROR(finish_oldest());
  const double per = std::chrono::duration<double, std::milli>(Clock::now() - start).count() / o.iterations;
  ms.assign(static_cast<std::size_t>(o.iterations), per);
  return Status::Ok();
}

}  // namespace

int run_vram_bench(const BenchOptions& o) {
  if (o.vram_target) return run_vram_target(o);
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus == 0) {
    std::fprintf(stderr, "kvferry bench --mem vram: no CUDA GPU here\n");
    return 2;
  }
  const int peer_device = o.peer_device >= 0 ? o.peer_device : (o.device + 1) % gpus;
  if (o.device >= gpus || peer_device >= gpus) {
    std::fprintf(stderr, "kvferry bench --mem vram: %d GPU(s) here\n", gpus);
    return 2;
  }
  const PoolShape shape = o.pool_shape();
  auto pool = VramPool::allocate(shape, o.device, o.layer_tensors);
  if (!pool.ok()) return std::fprintf(stderr, "kvferry bench: %s\n", pool.status().to_string().c_str()), 1;
  VramTarget target;
  if (Status s = spawn_vram_target(o, peer_device, &target); !s.ok())
    return std::fprintf(stderr, "kvferry bench: %s\n", s.to_string().c_str()), 1;
  AgentOptions ao;
  ao.name = "vram-initiator";
  ao.backends = {o.backend};
  ao.backend_params = o.local_params;
  auto agent = Agent::create(ao);
  if (!agent.ok()) return std::fprintf(stderr, "kvferry bench: %s\n", agent.status().to_string().c_str()), 1;
  Agent& a = **agent;
  Status st = a.register_memory(pool->region());
  if (st.ok()) st = a.fetch_remote("127.0.0.1", target.port).status();
  const bool peer_vram = o.peer_mem == "vram";
  // The target's pool as the library describes it: its GPU's, or host memory.
  auto remote_pool = shape.pool_at(peer_vram ? MemoryKind::kVram : MemoryKind::kDram, target.layer_bases,
                                   peer_vram ? static_cast<std::uint32_t>(peer_device) : 0);
  if (st.ok() && !remote_pool.ok()) st = remote_pool.status();
  if (!st.ok()) return std::fprintf(stderr, "kvferry bench: %s\n", st.to_string().c_str()), 1;
  auto local = a.prepare_local(pool->block_descriptors());
  auto remote = a.prepare_remote("vram-target", remote_pool->block_descriptors());
  // Fresh requests are strided (lanes x block ids): per request only the ids are checked.
  auto local_lanes = a.prepare_local_lanes(pool->block_lanes());
  auto remote_lanes = a.prepare_remote_lanes("vram-target", remote_pool->block_lanes());
  if (st.ok() && !local.ok()) st = local.status();
  if (st.ok() && !remote.ok()) st = remote.status();
  if (st.ok() && !local_lanes.ok()) st = local_lanes.status();
  if (st.ok() && !remote_lanes.ok()) st = remote_lanes.status();
  if (!st.ok()) return std::fprintf(stderr, "kvferry bench: %s\n", st.to_string().c_str()), 1;

  const std::uint64_t seed = o.seed ? o.seed : static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
  const auto local_blocks = choose_block_ids(o.block_pattern, local_side_seed(seed, 0), shape.blocks_per_layer, o.blocks);
  const auto remote_blocks =
      choose_block_ids(o.block_pattern, remote_side_seed(seed, 0), shape.blocks_per_layer, o.blocks);
  const auto local_ids = indices_in_every_layer(local_blocks, o.layers, shape.blocks_per_layer);
  const auto remote_ids = indices_in_every_layer(remote_blocks, o.layers, shape.blocks_per_layer);
  const LaneTransfer lanes{local_blocks, remote_blocks, 0, o.layers};
  const std::uint64_t bytes = std::uint64_t{o.layers} * o.blocks * o.block_size;
  std::string copy = o.backend == "cuda_ipc" ? "kernel" : "batch";
  for (const char* key : {"cuda_ipc.copy", "staging.copy"})
    if (auto it = o.local_params.find(key); it != o.local_params.end()) copy = it->second;
  const std::string where = peer_vram ? "GPU" + std::to_string(peer_device) : std::string("host memory");
  std::printf("kvferry bench --mem vram: %s copy=%s, GPU%d -> %s of another process, %u layers x %u %s blocks x %" PRIu64
              " B = %.3f GB per request, %d iterations, %s\n",
              o.backend.c_str(), copy.c_str(), o.device, where.c_str(), o.layers, o.blocks,
              to_string(o.block_pattern), o.block_size, static_cast<double>(bytes) / 1e9, o.iterations,
              o.layer_tensors ? "one allocation per layer on each GPU" : "one allocation per pool");
  if (o.pause_ms > 0) std::printf("a pause of %d ms before each request (outside the timed part)\n", o.pause_ms);

  auto ceilings = measure_ceilings(o, a, *pool, peer_device, bytes);
  if (!ceilings.ok()) return std::fprintf(stderr, "kvferry bench: ceiling: %s\n", ceilings.status().to_string().c_str()), 1;
  std::printf("ceiling: %s of the same bytes in this run", ceilings->kind);
  if (ceilings->pcie_write > 0)
    std::printf(" (pinned copy: device->host %.1f GB/s, host->device %.1f GB/s)", ceilings->pcie_write,
                ceilings->pcie_read);
  std::printf("\n");

  int rc = 0;
  std::printf("%-6s %10s %10s %8s %10s %12s %7s %9s\n", "op", "median_ms", "p99_ms", "post_ms", "GB/s",
              "ceiling_GB/s", "ratio", "verified");
  for (TransferOp op : o.ops) {
    const bool write = op == TransferOp::kWrite;
    // The request a re-post repeats is made the way each fresh one is (strided unless
    // --index-form), so that the two rows differ only in the reuse.
    auto make = [&] {
      return o.index_form ? a.create_transfer(op, *local, local_ids, *remote, remote_ids)
                          : a.create_transfer(op, *local_lanes, *remote_lanes, lanes);
    };
    auto req = make();
    if (!req.ok()) return std::fprintf(stderr, "kvferry bench: %s\n", req.status().to_string().c_str()), 1;
    std::vector<double> ms, post_ms, cpu_us;  // whole request; time inside post(); caller CPU create+post
    // post() returned -> wait() returned; of that, the part after the library saw the end.
    std::vector<double> after_post_ms, wake_us;
    if (o.inflight > 1) {
      Status s = run_in_flight(o, make, ms, post_ms, cpu_us);
      if (!s.ok()) return std::fprintf(stderr, "kvferry bench: transfer: %s\n", s.to_string().c_str()), 1;
    }
    for (int i = 0; o.inflight == 1 && i < o.warmup + o.iterations; ++i) {
      if (o.pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(o.pause_ms));
      const auto t0 = Clock::now();
      const double cpu0 = thread_cpu_micros();
      // Fresh requests (the default): what an engine that builds a request per transfer
      // pays; --repost posts the one made above again.
      if (o.fresh_requests) {
        req = make();
        if (!req.ok()) return std::fprintf(stderr, "kvferry bench: %s\n", req.status().to_string().c_str()), 1;
      }
      Status s = req->post();
      const double cpu1 = thread_cpu_micros();
      const auto t1 = Clock::now();
      if (s.ok()) s = req->wait(60s);
      const auto t2 = Clock::now();
      if (!s.ok()) return std::fprintf(stderr, "kvferry bench: transfer: %s\n", s.to_string().c_str()), 1;
      if (i < o.warmup) continue;
      const TransferTelemetry tel = req->telemetry();
      const double after_post = std::chrono::duration<double, std::milli>(t2 - t1).count();
      ms.push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
      post_ms.push_back(static_cast<double>(tel.post_ns) / 1e6);
      cpu_us.push_back(cpu1 - cpu0);
      after_post_ms.push_back(after_post);
      wake_us.push_back((after_post - static_cast<double>(tel.transfer_ns - tel.post_ns) / 1e6) * 1e3);
    }
    std::sort(cpu_us.begin(), cpu_us.end());
    const double cpu_median = cpu_us[cpu_us.size() / 2];
    std::sort(ms.begin(), ms.end());
    std::sort(post_ms.begin(), post_ms.end());
    const double post_median = post_ms[post_ms.size() / 2];
    auto median_of = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v.empty() ? 0.0 : v[v.size() / 2];
    };
    const double median = ms[ms.size() / 2], p99 = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
    const double gbps = static_cast<double>(bytes) / (median / 1e3) / 1e9;
    const double ceiling = write ? ceilings->write : ceilings->read;
    const double pcie = write ? ceilings->pcie_write : ceilings->pcie_read;
    std::string verified = "-";
    if (o.verify) {
      const std::uint64_t data_seed = seed ^ (write ? 0x57 : 0x52);
      bool good = false;
      if (write) {
        good = pool->fill_pattern(data_seed).ok() && ask_vram_target(a, "poison") == "poisoned" && req->post().ok() &&
               req->wait(60s).ok();
        if (good) {
          auto expect = expected_image(shape, data_seed, local_ids, remote_ids);
          good = ask_vram_target(a, "checksum") == checksum_answer(VramPool::checksum_of(expect));
        }
      } else {
        good = pool->poison().ok() && ask_vram_target(a, "fill " + std::to_string(data_seed)) == "filled" &&
               req->post().ok() && req->wait(60s).ok();
        if (good) {
          auto expect = expected_image(shape, data_seed, remote_ids, local_ids);
          auto got = pool->download();
          good = got.ok() && *got == expect;
          if (got.ok() && !good) {
            std::string ids;
            for (std::size_t i = 0; i < std::min<std::size_t>(4, local_ids.size()); ++i)
              ids += " " + std::to_string(remote_ids[i]) + "->" + std::to_string(local_ids[i]);
            std::printf("       read check: %s (first pairs source->destination:%s)\n",
                        describe_difference(shape, expect, *got, data_seed).c_str(), ids.c_str());
          }
        }
      }
      verified = good ? "yes" : "FAILED";
      if (!good) rc = 3;
    }
    std::printf("%-6s %10.3f %10.3f %8.3f %10.1f %12.1f %6.1f%% %9s%s\n", write ? "write" : "read", median, p99,
                post_median, gbps, ceiling, 100.0 * gbps / ceiling, verified.c_str(),
                o.fresh_requests ? "  (a new request each time)" : "  (re-posted)");
    if (o.inflight > 1)
      std::printf("       %d requests in flight: median_ms is the timed run's wall time / requests\n", o.inflight);
    std::printf("       create + post: %.1f us of CPU (median)\n", cpu_median);
    if (!after_post_ms.empty())
      std::printf("       post returned -> wait returned: %.3f ms (median), of which after the library saw the end: "
                  "%.1f us\n", median_of(after_post_ms), median_of(wake_us));
    if (o.json)
      std::printf("{\"mem\":\"vram\",\"peer_mem\":\"%s\",\"backend\":\"%s\",\"copy\":\"%s\",\"op\":\"%s\",\"device\":%d,"
                  "\"peer_device\":%d,\"layers\":%u,\"blocks\":%u,\"block_size\":%" PRIu64 ",\"bytes\":%" PRIu64
                  ",\"median_ms\":%.4f,\"p99_ms\":%.4f,\"post_ms\":%.4f,\"gbps\":%.2f,\"ceiling\":\"%s\",\"ceiling_gbps\":%.2f,"
                  "\"ratio\":%.4f,\"pinned_copy_gbps\":%.2f,\"fresh_requests\":%s,\"create_post_cpu_us\":%.1f,"
                  "\"layer_tensors\":%s,\"pause_ms\":%d,\"after_post_ms\":%.4f,\"wake_us\":%.1f,"
                  "\"verified\":\"%s\"}\n",
                  o.peer_mem.c_str(), o.backend.c_str(), copy.c_str(), write ? "write" : "read", o.device, peer_device,
                  o.layers, o.blocks, o.block_size, bytes, median, p99, post_median, gbps, ceilings->kind, ceiling, gbps / ceiling,
                  pcie, o.fresh_requests ? "true" : "false", cpu_median, o.layer_tensors ? "true" : "false",
                  o.pause_ms, median_of(after_post_ms), median_of(wake_us), verified.c_str());
    std::fflush(stdout);
  }
  (void)a.notify("vram-target", "quit");
  return rc;
}

}  // namespace kvferry::cli
#endif  // KVFERRY_HAVE_CUDA
