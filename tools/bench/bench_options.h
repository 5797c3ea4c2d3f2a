// bench_options.h — everything `kvferry bench` is told on its command line.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/block_choice.h"
#include "common/host_pool.h"
#include "tp/tp_bench.h"
#include "kvferry/kvferry.h"

namespace kvferry::cli {

struct BenchOptions {
  // As given on the command line.
  std::string backend = "tcp";
  std::string op = "both";
  std::string block_size_text = "64KiB";
  std::uint32_t blocks = 256;  // per layer per request
  std::uint32_t layers = 40;
  std::string pattern = "scattered";
  int iterations = 20;
  int warmup = 3;
  bool verify = false;
  bool json = false;
  int streams = 0;               // 0: the backend's default
  int small_round_trips = 1000;  // 8-byte write+notify latency case; 0 skips it
  int ceiling_reps = 5;
  bool serve = false;
  std::string listen = "127.0.0.1:0";
  std::string peer;
  std::string metadata;  // etcd://HOST:PORT/NAMESPACE: the agents exchange metadata there
  std::string file;                 // --backend file: the file to offload to (bench_file.h)
  std::vector<std::string> params;  // KEY=VALUE, backend params of this process's agent
  std::uint64_t seed = 0;           // 0: a fresh seed per run
  int report_fd = -1;               // internal: set when spawned by an initiator
  // GPU memory (bench_vram.cc): --mem vram moves blocks between pools on GPUs
  // `device` (ours) and `peer_device` (the target process's), through cuda_ipc.
  std::string mem = "dram";
  std::string peer_mem = "vram";  // with --mem vram: the target's pool (vram, or dram)
  // Every timed request is created fresh (as an engine does, new block ids each time);
  // --repost creates one per case and posts it again and again. Derived: !repost.
  bool fresh_requests = true;
  bool repost = false;
  bool index_form = false;  // requests as index transfers of expanded pairs (the older path)
  // Requests in flight at once (as an engine keeps several prompts moving): request r+1 is
  // created and posted while r copies; 1 waits for each before making the next.
  int inflight = 1;
  int batch = 0;            // > 0: the batch case: this many requests of --blocks, one post_batch
  int device = 0;
  int peer_device = -1;      // -1: the next GPU if there is one, else the same
  bool vram_target = false;  // internal: the target process of a vram bench
  // --mem vram: one GPU allocation per layer on each side (an engine's per-layer KV
  // tensors) instead of one for the whole pool; the strided request is the same.
  bool layer_tensors = false;
  int pause_ms = 0;  // --mem vram: idle time before each request, outside the timed part
  TpBenchOptions tp;         // --tp P:D: heterogeneous tensor parallelism (tp_bench.h)

  // Derived by finalize().
  std::uint64_t block_size = 0;
  BlockPattern block_pattern = BlockPattern::kScattered;
  std::vector<TransferOp> ops;
  std::map<std::string, std::string> local_params;   // from --param
  std::map<std::string, std::string> shared_params;  // sent to the target too (streams)

  // Parses and cross-checks the text options; a clear message on failure.
  Status finalize();

  // pool_blocks = max(2 * blocks, blocks + 64): room for scattered ids to scatter, and
  // at least twice the request so the memcpy ceiling can copy between two halves.
  PoolShape pool_shape() const;
};

}  // namespace kvferry::cli
