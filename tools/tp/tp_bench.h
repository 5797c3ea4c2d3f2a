// tp_bench.h — `kvferry bench --tp P:D`: heterogeneous-TP transfers between P prefill and
// D decode processes, per path (direct head slices, host staging, device staging with
// GPU pools) and against the naive per-head descriptor plan, each compared with the
// path's ceiling measured in the same run: for host pools the same bytes moved as one
// plain bench transfer on the same backend; for GPU pools a peer copy (device staging,
// direct) or a pinned device->host copy (host staging), and with --tp-ingress several
// GPUs writing into one at once.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace kvferry::cli {

struct BenchOptions;

struct TpBenchOptions {
  std::string groups;  // "P:D"; empty: not a TP bench
  std::string model = "mistral-small-3.1";
  std::uint32_t kv_heads = 0;
  std::uint64_t tokens = 4096;
  std::string src_layout, dst_layout;
  std::uint32_t src_block_tokens = 0, dst_block_tokens = 0;
  std::vector<std::string> paths;  // empty: every path that applies, and naive
  bool ingress = false;            // GPU pools: also the multi-sender ingress ceiling
};

void add_tp_bench_options(CLI::App* bench, TpBenchOptions& options);
int run_tp_bench(const BenchOptions& options);

}  // namespace kvferry::cli
