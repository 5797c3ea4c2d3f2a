// The path names and the cost estimate behind TpPath::kAuto.
#include <algorithm>

#include "kv/tp/tp_direct_plan.h"
#include "kv/tp/tp_head_lanes.h"
#include "kvferry/kv/tp_transfer.h"

namespace kvferry {
namespace {

// What one more descriptor and one more pass over the bytes cost. Host figures are this
// project's 2-core VM (docs/benchmarks.md, "Heterogeneous TP"): a descriptor of a host
// backend costs about 0.3 us beyond its bytes, and a gather or scatter copies at about
// 8 GB/s on one core. GPU figures are the H200 machine's (docs/benchmarks.md, GPU.md):
// a copy-engine descriptor about 1 us, a gather/scatter kernel over HBM about 1.5 TB/s.
// A direct share in the strided form (tp_head_lanes.h) pays no planning, validation or
// slicing per piece, only the backend's walk and its copy call: in a profile of 4->2
// vllm-nhd over shm (512 B pieces) the walk and the call took 3% of the samples and the
// copies 43%, a few ns per piece; 0.02 us is a generous bound. GPU pools have no strided
// form here (the same figure as a descriptor).
struct PathCosts {
  double per_descriptor_s;
  double per_strided_piece_s;
  double copy_bytes_per_s;
  double fixed_s;  // a gather's and a scatter's launch or wake-up
};
constexpr PathCosts kHostCosts{0.3e-6, 0.02e-6, 8e9, 50e-6};
constexpr PathCosts kDeviceCosts{1.0e-6, 1.0e-6, 1.5e12, 30e-6};

// A host backend whose every piece, strided or not, costs far more than a memcpy call:
// tcp sends each piece as its own segment (an iovec and a table entry, 64 per frame,
// and a readv on the receiving side). Plain `kvferry bench --backend tcp --op write` of
// 160 MiB on the 2-core VM: 512 B pieces 0.30 and 8 KiB pieces 0.87 of 1 MiB pieces, i.e.
// 1.7-1.8 us per piece at load 14 (docs/benchmarks.md, "TP on two cores: the whole
// prompt, the path the bytes take, streaming stores"). 1 us is a round figure below that
// loaded one and well inside what separates the layouts (Mistral-Small-3.1 4->2: direct
// beats staging for vllm-hnd's 8 KiB pieces below ~2 us a piece, for vllm-nhd's 512 B
// ones below ~0.13 us). Backends not listed here copy pieces in memory (shm) or were
// not measured: they keep the generic figures.
struct BackendPieceCost {
  std::string_view backend;
  double per_piece_s;
};
constexpr BackendPieceCost kBackendPieceCosts[] = {{"tcp", 1.0e-6}};

PathCosts host_costs(std::string_view backend) {
  PathCosts c = kHostCosts;
  for (const BackendPieceCost& b : kBackendPieceCosts) {
    if (b.backend == backend) c.per_descriptor_s = c.per_strided_piece_s = b.per_piece_s;
  }
  return c;
}

}  // namespace

std::string_view to_string(TpPath path) noexcept {
  switch (path) {
    case TpPath::kAuto: return "auto";
    case TpPath::kHostStaging: return "host";
    case TpPath::kDeviceStaging: return "device";
    case TpPath::kDirect: return "direct";
  }
  return "";
}

bool parse_tp_path(std::string_view text, TpPath* out) noexcept {
  for (TpPath p : {TpPath::kAuto, TpPath::kHostStaging, TpPath::kDeviceStaging, TpPath::kDirect}) {
    if (text == to_string(p)) {
      *out = p;
      return true;
    }
  }
  return false;
}

std::uint64_t tp_direct_descriptors(const KvLayout& source, const KvLayout& destination, std::uint64_t tokens,
                                    std::uint32_t heads) {
  return tp::count_merged_slices(source, destination, heads, tokens);
}

TpPathEstimate tp_path_estimate(const KvLayout& source, const KvLayout& destination, MemoryKind kind,
                                std::uint64_t tokens, std::uint32_t heads, std::uint32_t shares,
                                std::string_view host_backend) {
  const PathCosts c = kind == MemoryKind::kVram ? kDeviceCosts : host_costs(host_backend);
  const KvGeometry& g = destination.geometry();
  const std::uint64_t kv = destination.arrangement() == KvArrangement::kMla ? 1 : 2;
  const double bytes = static_cast<double>(tokens) * heads * g.layers * kv * g.head_dim * dtype_bytes(g.dtype);
  TpPathEstimate e;
  const std::uint32_t per_share = std::max<std::uint32_t>(1, heads / std::max<std::uint32_t>(1, shares));
  e.direct_descriptors = tp_direct_descriptors(source, destination, tokens, per_share) * std::max<std::uint32_t>(1, shares);
  // The bytes cross the link on both paths; only what differs is compared.
  const bool strided = kind == MemoryKind::kDram && tp::head_lane_unit(source, destination) != tp::LaneUnit::kNone;
  e.direct_seconds = static_cast<double>(e.direct_descriptors) * (strided ? c.per_strided_piece_s : c.per_descriptor_s);
  e.staging_seconds = 2 * bytes / c.copy_bytes_per_s + 2 * c.fixed_s + static_cast<double>(shares) * c.per_descriptor_s;
  const bool staging = e.staging_seconds < e.direct_seconds;
  e.path = !staging ? TpPath::kDirect : kind == MemoryKind::kVram ? TpPath::kDeviceStaging : TpPath::kHostStaging;
  return e;
}

}  // namespace kvferry
