// tp_bench_ceiling.h — the GPU ceilings of `kvferry bench --tp --mem vram`, measured in
// the parent process in the same run: a GPU0 -> GPU1 peer copy of the prompt's bytes
// (device staging and direct; GPU0 -> GPU0 on a machine of one GPU), a pinned device -> host copy of them on GPU 0 (host
// staging), and optionally GPUs 1..k writing into GPU 0 at once (the decode rank's
// ingress when several prefill ranks send to it). NotSupported without CUDA.
#pragma once

#include <cstdint>

#include "kvferry/kvferry.h"

namespace kvferry::cli {

struct TpGpuCeilings {
  double peer_copy_gbps = 0;
  // One GPU only: the "peer copy" is a copy inside GPU 0 (every rank runs there too).
  bool single_gpu = false;
  double device_to_host_gbps = 0;
  std::uint32_t ingress_sources = 0;
  double ingress_gbps = 0;  // sum over the sources
};

// `ingress_sources` 0 skips the ingress ceiling; it is capped at the GPUs present - 1.
Result<TpGpuCeilings> measure_tp_gpu_ceilings(std::uint64_t bytes, std::uint32_t ingress_sources, int reps);

}  // namespace kvferry::cli
