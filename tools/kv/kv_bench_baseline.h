// kv_bench_baseline.h — `kvferry pull --compare-bench`: runs `kvferry bench` (this same
// binary, as a child process with its own target process) right after the pull, on
// the same backend, for the same bytes, descriptors and block pattern: one request =
// `blocks` blocks of `lanes` lanes of `segment_bytes` each, reads, as many iterations
// as the pull had measured steps. Its stdout (--json) is parsed for the read case.
// The child is bounded (a time limit, then killed) and always reaped.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "kvferry/kvferry.h"

namespace kvferry::cli {

struct BenchBaselineRequest {
  std::string backend;
  std::vector<std::string> params;
  std::uint64_t segment_bytes = 0;
  std::uint32_t lanes = 0;   // bench "layers"
  std::uint32_t blocks = 0;  // bench "blocks" per layer per request
  std::string pattern;
  int iterations = 0;
  int warmup = 0;
};

struct BenchBaseline {
  double gbps = 0;
  double p50_ms = 0;
  double ceiling_gbps = 0;
  std::string ceiling_name;
  std::string command;  // as run, for the record
  // Blocks per lane of the bench's pools (its rule: max(2 x blocks, blocks + 64)).
  // Scattered ids spread over the pool, so a pull from larger pools touches memory
  // that caches hold less of: compare like with like (--pool-blocks) on memory-bound paths.
  std::uint32_t pool_blocks = 0;
};

Result<BenchBaseline> run_bench_baseline(const BenchBaselineRequest& request, std::chrono::seconds limit);

}  // namespace kvferry::cli
