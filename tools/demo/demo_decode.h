// demo_decode.h — one row of `kvferry demo`: spawn a prefill process with `backend`,
// pull a prompt's KV blocks from it in one index transfer, verify every byte. Pools in
// host memory, or (--mem vram) the prefill's on GPU `device` and ours on `peer_device`.
#pragma once

#include <cstdint>
#include <string>

#include "demo/demo_options.h"
#include "kvferry/kvferry.h"

namespace kvferry::cli {

struct DemoRow {
  std::string backend;
  std::uint32_t blocks_per_layer_moved = 0;
  std::uint64_t bytes = 0;
  std::uint64_t descriptors = 0;
  std::uint64_t descriptors_merged = 0;
  double milliseconds = 0;  // create_transfer + post + wait
  double gbps = 0;
  bool verified = false;
  std::string verify_message;  // the first mismatch, when !verified
};

// `options.peer_device` must be resolved (not -1) when options.mem is vram.
Result<DemoRow> run_demo_decode(const DemoOptions& options, const std::string& backend);

}  // namespace kvferry::cli
