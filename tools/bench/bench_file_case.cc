// `kvferry bench --backend file`: offload (pool -> file) and onboard (file -> pool) of
// `blocks` scattered blocks of every layer per request, as one index transfer between the
// prepared pool and the prepared file; the file holds the request's blocks back to back,
// layer-major, as an offload store would.
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "common/agent_factory.h"
#include "bench/bench_file.h"
#include "bench/bench_file_ceiling.h"
#include "bench/bench_report.h"
#include "bench/bench_session.h"
#include "bench/bench_verify_data.h"
#include "common/block_choice.h"
#include "common/block_pattern.h"
#include "common/cli_util.h"
#include "common/latency_stats.h"
#include "common/progress_line.h"

namespace kvferry::cli {
namespace {

constexpr std::uint64_t kCeilingChunk = 1u << 20;

struct FileBench {
  std::unique_ptr<Agent> agent;
  std::optional<HostPool> pool;
  FileRegistration file;
  PreparedList blocks;                  // every block of the pool, layer-major (host_pool.h)
  PreparedList slots;                   // the file's block slots, in request order
  std::vector<std::uint32_t> slot_ids;  // 0..slots-1
  std::uint64_t request_bytes = 0;
};

Result<FileBench> set_up(const BenchOptions& o) {
  FileBench b;
  KVF_ASSIGN_OR_RETURN(b.agent,
                       make_single_backend_agent(unique_agent_name("bench-file"), "file", o.local_params));
  KVF_ASSIGN_OR_RETURN(HostPool pool, HostPool::allocate(o.pool_shape()));
  b.pool.emplace(std::move(pool));
  KVF_RETURN_IF_ERROR(b.agent->register_memory(b.pool->region()));
  const std::uint32_t slots = o.blocks * o.layers;
  b.request_bytes = std::uint64_t{slots} * o.block_size;
  FileOpenOptions fo;
  fo.create = true;
  fo.capacity = b.request_bytes;
  KVF_ASSIGN_OR_RETURN(b.file, b.agent->register_file(o.file, fo));
  KVF_ASSIGN_OR_RETURN(b.blocks, b.agent->prepare_local(b.pool->block_descriptors()));
  DescriptorList list(MemoryKind::kFile);
  list.reserve(slots);
  for (std::uint32_t i = 0; i < slots; ++i)
    list.add(b.file.at(std::uint64_t{i} * o.block_size, o.block_size));
  KVF_ASSIGN_OR_RETURN(b.slots, b.agent->prepare_remote(b.agent->name(), list));
  b.slot_ids.resize(slots);
  std::iota(b.slot_ids.begin(), b.slot_ids.end(), 0u);
  return b;
}

std::vector<std::uint32_t> request_indices(const BenchOptions& o, std::uint64_t seed) {
  const PoolShape shape = o.pool_shape();
  return indices_in_every_layer(choose_block_ids(o.block_pattern, seed, shape.blocks_per_layer, o.blocks),
                                o.layers, shape.blocks_per_layer);
}

Status move(FileBench& b, TransferOp op, const std::vector<std::uint32_t>& pool_indices,
            double* prep_us = nullptr, double* latency_us = nullptr, std::uint64_t* merged = nullptr) {
  const double cpu0 = thread_cpu_micros();
  KVF_ASSIGN_OR_RETURN(TransferRequest t,
                       b.agent->create_transfer(op, b.blocks, pool_indices, b.slots, b.slot_ids));
  const auto posted = Clock::now();
  KVF_RETURN_IF_ERROR(t.post().with_context("post"));
  if (prep_us) *prep_us = thread_cpu_micros() - cpu0;
  KVF_RETURN_IF_ERROR(t.wait(kTransferTimeout));
  if (latency_us) *latency_us = to_micros(Clock::now() - posted);
  if (merged) *merged = t.telemetry().descriptors_merged;
  return Status::Ok();
}

Result<CaseResult> run_case(const BenchOptions& o, FileBench& b, TransferOp op) {
  CaseResult result;
  result.backend = "file";
  result.op = op == TransferOp::kWrite ? "offload" : "onboard";
  result.pattern = to_string(o.block_pattern);
  result.block_size = o.block_size;
  result.blocks = o.blocks;
  result.layers = o.layers;
  result.bytes = b.request_bytes;
  result.descriptors = b.slot_ids.size();
  result.iterations = o.iterations;
  const int total = o.warmup + o.iterations;
  std::vector<std::vector<std::uint32_t>> plans;
  for (int r = 0; r < total; ++r)
    plans.push_back(request_indices(o, local_side_seed(o.seed, static_cast<std::uint64_t>(r))));
  std::vector<double> latency, prep, ceiling_gbps;
  std::string ceiling_name;
  // The ceiling's reps are spread among the measured requests, so that both see the same
  // disk (a shared virtual disk drifts by tens of percent within a minute).
  const int ceiling_every = std::max(1, o.iterations / o.ceiling_reps);
  ProgressLine progress(result.op, total);
  double measured_seconds = 0;
  for (int r = 0; r < total; ++r) {
    double p = 0, l = 0;
    const auto t0 = Clock::now();
    KVF_RETURN_IF_ERROR(move(b, op, plans[static_cast<std::size_t>(r)], &p, &l, &result.descriptors_merged)
                            .with_context(result.op + " request " + std::to_string(r)));
    if (r >= o.warmup) {
      measured_seconds += to_seconds(Clock::now() - t0);
      latency.push_back(l);
      prep.push_back(p);
      const int done = r - o.warmup + 1;
      if (done % ceiling_every == 0 && static_cast<int>(ceiling_gbps.size()) < o.ceiling_reps) {
        KVF_ASSIGN_OR_RETURN(FileCeiling c, measure_file_ceiling(b.file.path, b.pool->base(), b.request_bytes,
                                                                 op == TransferOp::kWrite, kCeilingChunk, 1));
        ceiling_name = c.name;
        ceiling_gbps.push_back(c.gbps.at(0));
      }
    }
    progress.update(r + 1);
  }
  result.gbps =
      gigabytes_per_second(b.request_bytes * static_cast<std::uint64_t>(o.iterations), measured_seconds);
  const Percentiles pct = percentiles(std::move(latency));
  result.p50_us = pct.p50;
  result.p99_us = pct.p99;
  result.prep_us = median(std::move(prep));
  result.ceiling_name = ceiling_name;
  result.ceiling_gbps = median(std::move(ceiling_gbps));
  result.ratio = result.ceiling_gbps > 0 ? result.gbps / result.ceiling_gbps : 0;
  return result;
}

// Fresh pattern data offloaded from some blocks, onboarded into others of a poisoned pool.
Result<VerifyOutcome> verify_round_trip(const BenchOptions& o, FileBench& b) {
  const PoolShape shape = o.pool_shape();
  const std::uint64_t seed = mix64(o.seed ^ 0x5EED);
  const auto from = choose_block_ids(o.block_pattern, seed, shape.blocks_per_layer, o.blocks);
  const auto into = choose_block_ids(BlockPattern::kScattered, seed + 1, shape.blocks_per_layer, o.blocks);
  poison_pool(*b.pool);
  fill_request_blocks(*b.pool, from, seed);
  KVF_RETURN_IF_ERROR(
      move(b, TransferOp::kWrite, indices_in_every_layer(from, o.layers, shape.blocks_per_layer)));
  poison_pool(*b.pool);
  KVF_RETURN_IF_ERROR(
      move(b, TransferOp::kRead, indices_in_every_layer(into, o.layers, shape.blocks_per_layer)));
  return check_request_blocks(*b.pool, into, seed);
}

}  // namespace

int run_file_bench(const BenchOptions& o) {
  if (o.file.empty()) {
    std::fprintf(stderr, "kvferry bench: --backend file needs --file PATH (a file on the disk to measure)\n");
    return 2;
  }
  Result<FileBench> bench = set_up(o);
  if (!bench.ok()) {
    std::fprintf(stderr, "kvferry bench: %s\n", bench.status().to_string().c_str());
    return 1;
  }
  if (!o.json) {
    std::printf(
        "kvferry bench: backend file, %s (O_DIRECT %s), pool of %u layers x %u blocks x %s, "
        "%d iterations (+%d warm-up), seed %llu\n",
        bench->file.path.c_str(), bench->file.direct ? "yes" : "no", o.layers,
        o.pool_shape().blocks_per_layer, format_bytes(o.block_size).c_str(), o.iterations, o.warmup,
        static_cast<unsigned long long>(o.seed));
    print_table_header();
  }
  std::vector<CaseResult> results;
  for (TransferOp op : o.ops) {
    Result<CaseResult> r = run_case(o, *bench, op);
    if (!r.ok()) {
      std::fprintf(stderr, "kvferry bench: %s\n", r.status().to_string().c_str());
      return 1;
    }
    results.push_back(*r);
  }
  bool failed = false;
  if (o.verify) {
    Result<VerifyOutcome> v = verify_round_trip(o, *bench);
    if (!v.ok()) {
      std::fprintf(stderr, "kvferry bench: verification: %s\n", v.status().to_string().c_str());
      return 1;
    }
    failed = !v->ok;
    for (CaseResult& r : results) {
      r.verified = v->ok ? VerifyState::kPassed : VerifyState::kFailed;
      r.verify_message = v->message;
    }
  }
  for (const CaseResult& r : results) {
    if (!o.json) {
      print_table_row(r);
      continue;
    }
    nlohmann::json line = to_json(r);
    line["seed"] = o.seed;
    line["file"] = bench->file.path;
    line["direct"] = bench->file.direct;
    std::printf("%s\n", line.dump().c_str());
  }
  return failed ? 3 : 0;
}

}  // namespace kvferry::cli
