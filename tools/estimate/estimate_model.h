// estimate_model.h — answered with measured numbers: what does
// moving the KV cache cost in time-to-first-token (TTFT) when prefill and decode run on
// different engines?
//
// Model (stated in the output):
//   kv_bytes  = blocks_for_tokens(tokens) * block_bytes * layers  (whole blocks move)
//   prefill   = tokens / prefill_tokens_per_s                      (linear; attention's
//               quadratic term is ignored, so long prompts flatter the share)
//   transfer  = latency + kv_bytes / bandwidth                     (bandwidth and
//               latency measured by `kvferry bench`, or assumed by the user)
//   TTFT      = prefill + transfer + one decode step
//   share     = transfer / TTFT
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvferry/kvferry.h"

namespace kvferry::cli {

// One path's bandwidth, with where the number came from.
struct PathBandwidth {
  std::string name;       // backend (or the user's name for an assumed path)
  double gbps = 0;        // 10^9 bytes per second
  double latency_us = 0;  // fixed cost per transfer (bench's write+notify p50), 0 if unknown
  std::string source;     // "bench read, 640 MiB requests (file)", "assumed"
};

// Reads `kvferry bench --json` (or `kvferry pull --json`) output files. Per backend it
// keeps the throughput case that best represents a decode pulling a prompt: a read
// (pull results count as reads) over a write, then the largest request, then the
// later line; and the write+notify round trip p50 as its latency.
Result<std::vector<PathBandwidth>> read_measured_bandwidths(const std::vector<std::string>& files);
// "NAME=GB/s" entries, e.g. "rdma-400g=45".
Result<std::vector<PathBandwidth>> parse_assumed_bandwidths(const std::vector<std::string>& entries);

struct EstimateInputs {
  KvLayout layout;
  double prefill_tokens_per_s = 0;
  double decode_step_ms = 0;
};

struct PathCost {
  double transfer_ms = 0;
  double ttft_ms = 0;
  double share = 0;  // 0..1
};

struct EstimateRow {
  std::uint64_t tokens = 0;
  std::uint64_t kv_bytes = 0;
  double prefill_ms = 0;
  std::vector<PathCost> paths;  // in the order of the paths given
};

std::vector<EstimateRow> estimate(const EstimateInputs& inputs, const std::vector<std::uint64_t>& tokens,
                                  const std::vector<PathBandwidth>& paths);

// An SVG line chart of transfer share of TTFT (%) against prompt length (log2 axis),
// one line per path.
std::string render_share_plot_svg(const std::string& title, const std::vector<EstimateRow>& rows,
                                  const std::vector<PathBandwidth>& paths);

}  // namespace kvferry::cli
