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

// What a host backend adds per piece, strided or not, beyond the generic figures. tcp
// carries a run of equal pieces at fixed strides as one segment table entry (tcp_wire.h),
// so its own work per piece is a few ns (the engine's functions ~2% of a direct 4->2
// vllm-nhd profile); what remains is the kernel copying each piece as its own iovec
// into or out of rows at a stride. Loopback on the 2-core VM, 480 MiB, CPU time: a
// receive into 512 B units at a 1 KiB stride cost 0.09 us per unit more than into one
// contiguous buffer, a send from them 0.05 us more (docs/benchmarks.md, "tcp's cost per
// piece"): 0.15 us. That is just above what host staging's two passes cost a 512 B piece
// (0.128 us at 8 GB/s), and whole-prompt CPU agrees (vllm-nhd 4->2: direct 827 ms, host
// 733; 2->4: 655 and 320, load 8): auto stages vllm-nhd and sends vllm-hnd's 8 KiB block
// rows (below ~2 us a piece) direct. Backends not listed here copy pieces in memory (shm)
// or were not measured: they keep the generic figures.
struct BackendPieceCost {
  std::string_view backend;
  double per_piece_s;
};
constexpr BackendPieceCost kBackendPieceCosts[] = {{"tcp", 0.15e-6}};

PathCosts host_costs(std::string_view backend) {
  PathCosts c = kHostCosts;
  for (const BackendPieceCost& b : kBackendPieceCosts) {
    if (b.backend == backend) {
      c.per_descriptor_s += b.per_piece_s;
      c.per_strided_piece_s += b.per_piece_s;
    }
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
