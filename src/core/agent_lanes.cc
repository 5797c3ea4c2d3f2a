// Prepared lanes and strided transfers (include/kvferry/block_lanes.h): a request is
// lanes x block ids, validated per lane at prepare and per block id range per request,
// merged once on block ids, and handed to the backends in that form.
#include <algorithm>
#include <chrono>

#include "core/agent_impl.h"
#include "core/describe.h"

namespace kvferry {

namespace {

// The position of the first id >= blocks, or -1. The max scan is branch-free.
std::int64_t first_out_of_range(std::span<const std::uint32_t> ids, std::uint32_t blocks) {
  std::uint32_t max_id = 0;
  for (std::uint32_t id : ids) max_id = id > max_id ? id : max_id;
  if (max_id < blocks) return -1;
  for (std::size_t i = 0; i < ids.size(); ++i)
    if (ids[i] >= blocks) return static_cast<std::int64_t>(i);
  return -1;
}

Status check_ids(std::span<const std::uint32_t> ids, std::uint32_t blocks, const char* side) {
  const std::int64_t bad = first_out_of_range(ids, blocks);
  if (bad < 0) return Status::Ok();
  return OutOfRange(std::string("strided transfer: ") + side + " block id " +
                    std::to_string(ids[static_cast<std::size_t>(bad)]) + " at position " + std::to_string(bad) +
                    " is outside the " + std::to_string(blocks) + " blocks of its lanes");
}

// Runs of ids consecutive on both sides merge only when a run is contiguous in memory.
void find_runs(std::span<const std::uint32_t> local, std::span<const std::uint32_t> remote, bool mergeable,
               std::vector<detail::StridedRun>& runs) {
  runs.reserve(local.size());
  for (std::size_t i = 0; i < local.size(); ++i) {
    if (mergeable && !runs.empty()) {
      detail::StridedRun& last = runs.back();
      if (local[i] == last.local_first + last.count && remote[i] == last.remote_first + last.count) {
        ++last.count;
        continue;
      }
    }
    runs.push_back(detail::StridedRun{local[i], remote[i], 1});
  }
}

}  // namespace

Result<std::shared_ptr<const detail::PreparedLanesData>> Agent::Impl::validate_lanes(std::string_view peer, bool local,
                                                                                     const BlockLanes& lanes) const {
  const char* side = local ? "local lanes" : "remote lanes";
  if (lanes.lane_addresses.empty()) return InvalidArgument(std::string(side) + ": no lanes");
  if (lanes.blocks == 0 || lanes.block_bytes == 0)
    return InvalidArgument(std::string(side) + ": blocks and block_bytes must be positive");
  if (lanes.block_stride < lanes.block_bytes)
    return InvalidArgument(std::string(side) + ": block_stride " + std::to_string(lanes.block_stride) +
                           " is smaller than block_bytes " + std::to_string(lanes.block_bytes) + " (blocks overlap)");
  const std::uint64_t last = lanes.blocks - 1u;
  if (lanes.block_stride != 0 && last > (UINT64_MAX - lanes.block_bytes) / lanes.block_stride)
    return InvalidArgument(std::string(side) + ": blocks x block_stride overflows 64 bits");
  const std::uint64_t extent = last * lanes.block_stride + lanes.block_bytes;

  auto data = std::make_shared<detail::PreparedLanesData>();
  data->owner = instance_;
  data->local = local;
  data->lanes = lanes;
  data->region_of_lane.reserve(lanes.lane_addresses.size());
  std::vector<detail::RegionInfo> regions;
  if (local) {
    regions = registry_->snapshot();
  } else {
    std::lock_guard lock(peers_mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end()) return NotFound("unknown peer '" + std::string(peer) + "' (load its metadata first)");
    data->peer = std::string(peer);
    data->peer_generation = it->second.generation;
    regions = it->second.regions;
  }
  for (std::size_t l = 0; l < lanes.lane_addresses.size(); ++l) {
    const Descriptor whole{lanes.lane_addresses[l], extent, lanes.device};
    if (whole.address > UINT64_MAX - extent)
      return InvalidArgument(std::string(side) + ": lane " + std::to_string(l) + " wraps around the address space");
    const detail::RegionInfo* r = detail::find_region_in_sorted(regions, lanes.kind, whole);
    if (!r)
      return OutOfRange(std::string(side) + ": lane " + std::to_string(l) + " " + detail::describe(lanes.kind, whole) +
                        (local ? " is not inside memory registered with agent '" + options_.name + "'"
                               : " is not inside memory that peer '" + std::string(peer) + "' announced"));
    auto at = std::find(data->region_ids.begin(), data->region_ids.end(), r->id);
    if (at == data->region_ids.end()) at = data->region_ids.insert(data->region_ids.end(), r->id);
    data->region_of_lane.push_back(static_cast<std::uint32_t>(at - data->region_ids.begin()));
  }
  return std::shared_ptr<const detail::PreparedLanesData>(std::move(data));
}

Result<PreparedLanes> Agent::Impl::prepare_lanes(std::string_view peer, bool local, const BlockLanes& lanes) {
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  KVF_ASSIGN_OR_RETURN(auto data, validate_lanes(peer, local, lanes));
  return PreparedLanes(std::move(data));
}

Result<TransferRequest> Agent::Impl::create_transfer(TransferOp op, const PreparedLanes& local,
                                                     const PreparedLanes& remote, const LaneTransfer& t,
                                                     TransferOptions options) {
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  const auto t0 = std::chrono::steady_clock::now();
  const detail::PreparedLanesData* l = local.data_.get();
  const detail::PreparedLanesData* r = remote.data_.get();
  if (!l || !r) return InvalidArgument("create_transfer: an empty PreparedLanes");
  if (l->owner != instance_ || r->owner != instance_)
    return InvalidArgument("create_transfer: PreparedLanes were prepared by another agent");
  if (!l->local) return InvalidArgument("create_transfer: the local lanes were prepared for peer '" + l->peer + "'");
  if (r->local) return InvalidArgument("create_transfer: the remote lanes are local prepared lanes");
  const BlockLanes& ll = l->lanes;
  const BlockLanes& rl = r->lanes;
  if (ll.block_bytes != rl.block_bytes)
    return InvalidArgument("create_transfer: local blocks of " + std::to_string(ll.block_bytes) +
                           " bytes but remote blocks of " + std::to_string(rl.block_bytes));
  const std::size_t lanes_both = std::min(ll.lane_addresses.size(), rl.lane_addresses.size());
  if (t.first_lane >= lanes_both || t.lane_count == 0)
    return InvalidArgument("create_transfer: lane range starting at " + std::to_string(t.first_lane) + " selects none of " +
                           std::to_string(lanes_both) + " lanes");
  const std::size_t end_lane =
      t.lane_count == LaneTransfer::kToLastLane ? lanes_both : std::size_t{t.first_lane} + t.lane_count;
  if (end_lane > lanes_both)
    return InvalidArgument("create_transfer: lanes " + std::to_string(t.first_lane) + ".." +
                           std::to_string(end_lane - 1) + " exceed the " + std::to_string(lanes_both) +
                           " lanes both sides have");
  if (t.local_blocks.size() != t.remote_blocks.size())
    return InvalidArgument("create_transfer: " + std::to_string(t.local_blocks.size()) + " local block ids but " +
                           std::to_string(t.remote_blocks.size()) + " remote block ids");
  if (t.local_blocks.empty()) return InvalidArgument("create_transfer: no block ids");
  KVF_RETURN_IF_ERROR(check_ids(t.local_blocks, ll.blocks, "local"));
  KVF_RETURN_IF_ERROR(check_ids(t.remote_blocks, rl.blocks, "remote"));

  // The regions of the selected lanes: a few per pool (one per tensor).
  RequestParts parts;
  const bool self = is_self(r->peer);
  std::vector<bool> used(l->region_ids.size(), false);
  for (std::size_t lane = t.first_lane; lane < end_lane; ++lane) used[l->region_of_lane[lane]] = true;
  for (std::size_t k = 0; k < used.size(); ++k) {
    if (!used[k]) continue;
    if (!registry_->alive(l->region_ids[k]))
      return FailedPrecondition("create_transfer: memory of the local prepared lanes was deregistered");
    parts.local_region_ids.push_back(l->region_ids[k]);
  }
  if (self)  // both sides are ours: the "remote" regions are pinned too
    for (std::uint64_t id : r->region_ids) {
      if (!registry_->alive(id))
        return FailedPrecondition("create_transfer: memory of the remote (self) prepared lanes was deregistered");
      parts.local_region_ids.push_back(id);
    }

  detail::StridedPieces sp;
  sp.local_lanes.assign(ll.lane_addresses.begin() + t.first_lane, ll.lane_addresses.begin() + end_lane);
  sp.remote_lanes.assign(rl.lane_addresses.begin() + t.first_lane, rl.lane_addresses.begin() + end_lane);
  sp.local_stride = ll.block_stride;
  sp.remote_stride = rl.block_stride;
  sp.block_bytes = ll.block_bytes;
  sp.local_device = ll.device;
  sp.remote_device = rl.device;
  const bool mergeable = ll.block_stride == ll.block_bytes && rl.block_stride == rl.block_bytes;
  find_runs(t.local_blocks, t.remote_blocks, mergeable, sp.runs);
  const std::uint64_t lanes = end_lane - t.first_lane;
  parts.requested = lanes * t.local_blocks.size();
  parts.total_bytes = parts.requested * ll.block_bytes;
  const std::uint64_t pieces = lanes * sp.runs.size();
  parts.pieces = std::make_shared<const detail::PieceList>(std::move(sp));

  KVF_ASSIGN_OR_RETURN(auto rt, route(r->peer, ll.kind, rl.kind, parts.total_bytes, pieces, options.backend));
  if (rt.generation != r->peer_generation)
    return FailedPrecondition("create_transfer: the remote prepared lanes are stale: peer '" + r->peer +
                              "' was reloaded since; prepare them again");
  return make_request(op, std::move(parts), t0, r->peer, rt, std::move(options));
}

}  // namespace kvferry
