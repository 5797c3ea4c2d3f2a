#include "bench/bench_options.h"

#include <algorithm>
#include <random>
#include <string>

#include "common/cli_util.h"
#include "kv/kv_agent.h"

namespace kvferry::cli {

Status BenchOptions::finalize() {
  const auto parsed_size = parse_byte_size(block_size_text);
  if (!parsed_size || *parsed_size == 0) {
    return InvalidArgument("--block-size '" + block_size_text + "': expected e.g. 64KiB, 64K, 1MiB or 65536");
  }
  block_size = *parsed_size;
  block_pattern = pattern == "contiguous" ? BlockPattern::kContiguous : BlockPattern::kScattered;
  ops.clear();
  if (op == "write" || op == "offload" || op == "both") ops.push_back(TransferOp::kWrite);
  if (op == "read" || op == "onboard" || op == "both") ops.push_back(TransferOp::kRead);
  if (blocks == 0 || layers == 0 || iterations < 1 || warmup < 0 || ceiling_reps < 1 ||
      small_round_trips < 0) {
    return InvalidArgument("--blocks, --layers, --iterations and --ceiling-reps must be positive");
  }
  KVF_ASSIGN_OR_RETURN(local_params, parse_backend_params(params));
  shared_params.clear();
  if (streams > 0) {
    if (backend != "tcp") return InvalidArgument("--streams applies to the tcp backend only");
    shared_params["tcp.streams"] = std::to_string(streams);
  }
  fresh_requests = !repost;
  if (inflight < 1 || inflight > 64) return InvalidArgument("--inflight must be 1..64 (got " + std::to_string(inflight) + ")");
  if (batch < 0) return InvalidArgument("--batch must be positive");
  if (batch > 0 && mem != "dram") return InvalidArgument("--batch measures host pools (--mem dram)");
  if ((layer_tensors || pause_ms > 0) && mem != "vram")
    return InvalidArgument("--layer-tensors and --pause-ms apply to GPU pools (--mem vram)");
  if (seed == 0) seed = (std::uint64_t{std::random_device{}()} << 32) | std::random_device{}();
  return pool_shape().validate().with_context("pool shape");
}

PoolShape BenchOptions::pool_shape() const {
  // The batch case touches batch x blocks distinct blocks per layer, once: no memcpy
  // ceiling halves, so a pool just large enough to scatter them.
  if (batch > 0) return PoolShape{layers, static_cast<std::uint32_t>(batch) * blocks + 64, block_size};
  const std::uint32_t pool_blocks = std::max(2 * blocks, blocks + 64);
  return PoolShape{layers, pool_blocks, block_size};
}

}  // namespace kvferry::cli
