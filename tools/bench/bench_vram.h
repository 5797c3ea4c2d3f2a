// bench_vram.h — the pieces of `kvferry bench --mem vram` (CUDA builds only).
//
// The initiator (bench_vram.cc) spawns its target (bench_vram_target.cc: this binary,
// `bench --mem vram --vram-target`), which allocates a pool of the same shape (GPU
// memory on --peer-device, or host memory with --peer-mem dram), registers it and
// answers notifications: "fill SEED", "poison", "checksum", "sink PORT BYTES",
// "source PORT BYTES", "quit". It is a ChildProcess: it dies with the initiator.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bench/bench_options.h"
#include "common/child_process.h"
#include "kvferry/kvferry.h"

namespace kvferry::cli {

int run_vram_target(const BenchOptions& o);

struct VramTarget {
  std::optional<ChildProcess> child;
  std::uint16_t port = 0;
  std::vector<std::uint64_t> layer_bases;  // where each layer of its pool starts
  ~VramTarget();  // gives it 2 s to quit, then terminates and reaps it
};

Status spawn_vram_target(const BenchOptions& o, int peer_device, VramTarget* t);
// The target's answer to "checksum": "checksum <16 hex digits>".
std::string checksum_answer(std::uint64_t sum);

// Sends `message` to the target and returns its answer ("no answer" after 120 s).
std::string ask_vram_target(Agent& a, const std::string& message);
// The target's next answer ("no answer" after 120 s).
std::string await_vram_target(Agent& a);

// Ceilings (bench_vram_ceiling.cc), best of `reps` after one warm-up, in GB/s.
// A contiguous peer copy of `bytes` between two GPUs (cuda_ipc's ceiling).
double peer_copy_ceiling(int src_dev, const void* src, int dst_dev, void* dst, std::uint64_t bytes, int reps);
// A contiguous copy of `bytes` between GPU memory at `vram` and pinned host memory, in
// 256 MiB copies (the staging paths' ceiling): device->host, or host->device.
double pinned_copy_ceiling(int device, void* vram, std::uint64_t bytes, bool device_to_host, int reps);
// A plain TCP stream of `bytes` between this process and the target over 127.0.0.1:
// we send and it acks (write), or it sends (read).
Result<double> socket_stream_ceiling(Agent& a, std::uint64_t bytes, bool we_send, int reps);
// Target side of that stream.
Status serve_socket_stream(std::uint16_t port, std::uint64_t bytes, bool we_send);

}  // namespace kvferry::cli
