#include <algorithm>
#include <chrono>
#include <numeric>
#include <unordered_map>

#include "core/agent_impl.h"
#include "core/describe.h"
#include "core/notification_wire.h"
#include "core/request_state.h"

namespace kvferry {

namespace {

std::uint64_t ns_since(std::chrono::steady_clock::time_point t0) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
}

using detail::find_region_in_sorted;

// Fills region_of/region_ids for one descriptor, reusing the last region when it matches.
struct RegionIndexer {
  detail::PreparedData& data;
  std::unordered_map<std::uint64_t, std::uint32_t> index;
  void add(std::uint64_t region_id) {
    auto [it, inserted] = index.emplace(region_id, static_cast<std::uint32_t>(data.region_ids.size()));
    if (inserted) data.region_ids.push_back(region_id);
    data.region_of.push_back(it->second);
  }
};

Agent::Impl::RequestParts parts_of(detail::MergeResult merged, std::uint64_t requested) {
  Agent::Impl::RequestParts parts;
  parts.total_bytes = merged.total_bytes;
  parts.pieces = std::make_shared<const detail::PieceList>(std::move(merged.pieces));
  parts.local_region_ids = std::move(merged.local_region_ids);
  parts.requested = requested;
  return parts;
}

Status check_lengths(const DescriptorList& list, const char* what) {
  if (list.empty()) return InvalidArgument(std::string(what) + ": the descriptor list is empty");
  for (std::size_t i = 0; i < list.size(); ++i)
    if (list[i].length == 0)
      return InvalidArgument(std::string(what) + ": descriptor " + std::to_string(i) + " has length 0");
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<const detail::PreparedData>> Agent::Impl::validate_local(const DescriptorList& list) const {
  KVF_RETURN_IF_ERROR(check_lengths(list, "local list"));
  auto data = std::make_shared<detail::PreparedData>();
  data->owner = instance_;
  data->local = true;
  data->kind = list.kind();
  data->descriptors = list.descriptors();
  data->region_of.reserve(list.size());
  auto regions = registry_->snapshot();  // sorted by (kind, device, address)
  RegionIndexer indexer{*data, {}};
  for (std::size_t i = 0; i < list.size(); ++i) {
    const detail::RegionInfo* r = find_region_in_sorted(regions, list.kind(), list[i]);
    if (!r)
      return OutOfRange("local descriptor " + std::to_string(i) + " " + detail::describe(list.kind(), list[i]) +
                        " is not inside memory registered with agent '" + options_.name + "'");
    indexer.add(r->id);
  }
  return std::shared_ptr<const detail::PreparedData>(std::move(data));
}

Result<std::shared_ptr<const detail::PreparedData>> Agent::Impl::validate_remote(std::string_view peer,
                                                                                 const DescriptorList& list) const {
  KVF_RETURN_IF_ERROR(check_lengths(list, "remote list"));
  auto data = std::make_shared<detail::PreparedData>();
  data->owner = instance_;
  data->local = false;
  data->peer = std::string(peer);
  data->kind = list.kind();
  data->descriptors = list.descriptors();
  data->region_of.reserve(list.size());
  std::lock_guard lock(peers_mu_);
  auto it = peers_.find(peer);
  if (it == peers_.end()) return NotFound("unknown peer '" + std::string(peer) + "' (load its metadata first)");
  data->peer_generation = it->second.generation;
  RegionIndexer indexer{*data, {}};
  for (std::size_t i = 0; i < list.size(); ++i) {
    const detail::RegionInfo* r = find_region_in_sorted(it->second.regions, list.kind(), list[i]);
    if (!r)
      return OutOfRange("remote descriptor " + std::to_string(i) + " " + detail::describe(list.kind(), list[i]) +
                        " is not inside memory that peer '" + std::string(peer) + "' announced");
    indexer.add(r->id);
  }
  return std::shared_ptr<const detail::PreparedData>(std::move(data));
}

Result<PreparedList> Agent::Impl::prepare_local(const DescriptorList& list) {
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  KVF_ASSIGN_OR_RETURN(auto data, validate_local(list));
  return PreparedList(std::move(data));
}

Result<PreparedList> Agent::Impl::prepare_remote(std::string_view peer, const DescriptorList& list) {
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  KVF_ASSIGN_OR_RETURN(auto data, validate_remote(peer, list));
  return PreparedList(std::move(data));
}

Result<TransferRequest> Agent::Impl::create_transfer(TransferOp op, const DescriptorList& local,
                                                     std::string_view peer, const DescriptorList& remote,
                                                     TransferOptions options) {
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  const auto t0 = std::chrono::steady_clock::now();
  if (local.size() != remote.size())
    return InvalidArgument("create_transfer: " + std::to_string(local.size()) + " local descriptors but " +
                           std::to_string(remote.size()) + " remote descriptors");
  KVF_ASSIGN_OR_RETURN(auto l, validate_local(local));
  KVF_ASSIGN_OR_RETURN(auto r, validate_remote(peer, remote));
  std::vector<std::uint32_t> idx(local.size());
  std::iota(idx.begin(), idx.end(), 0u);
  KVF_ASSIGN_OR_RETURN(auto merged, detail::merge_index_pairs(*l, idx, *r, idx));
  KVF_ASSIGN_OR_RETURN(auto rt, route(peer, local.kind(), remote.kind(), merged.total_bytes, merged.pieces.size(),
                                      options.backend));
  if (rt.generation != r->peer_generation)
    return NotFound("peer '" + std::string(peer) + "' was reloaded while the transfer was being created");
  if (is_self(peer))  // both sides are ours: pin the "remote" regions too
    merged.local_region_ids.insert(merged.local_region_ids.end(), r->region_ids.begin(), r->region_ids.end());
  return make_request(op, parts_of(std::move(merged), local.size()), t0, std::string(peer), rt, std::move(options));
}

Result<TransferRequest> Agent::Impl::create_transfer(TransferOp op, const PreparedList& local,
                                                     std::span<const std::uint32_t> local_indices,
                                                     const PreparedList& remote,
                                                     std::span<const std::uint32_t> remote_indices,
                                                     TransferOptions options) {
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  const auto t0 = std::chrono::steady_clock::now();
  const detail::PreparedData* l = local.data_.get();
  const detail::PreparedData* r = remote.data_.get();
  if (!l || !r) return InvalidArgument("create_transfer: an empty PreparedList");
  if (l->owner != instance_ || r->owner != instance_)
    return InvalidArgument(std::string("create_transfer: the ") + (l->owner != instance_ ? "local" : "remote") +
                           " PreparedList was prepared by another agent (instance " +
                           (l->owner != instance_ ? l->owner : r->owner).hex() + "), not by '" + options_.name +
                           "' (instance " + instance_.hex() + ")");
  if (!l->local) return InvalidArgument("create_transfer: the local list was prepared for peer '" + l->peer + "'");
  if (r->local) return InvalidArgument("create_transfer: the remote list is a local prepared list");
  for (std::uint64_t id : l->region_ids)
    if (!registry_->alive(id))
      return FailedPrecondition("create_transfer: memory of the local prepared list was deregistered");
  const bool self = is_self(r->peer);
  if (self)
    for (std::uint64_t id : r->region_ids)
      if (!registry_->alive(id))
        return FailedPrecondition("create_transfer: memory of the remote (self) prepared list was deregistered");
  KVF_ASSIGN_OR_RETURN(auto merged, detail::merge_index_pairs(*l, local_indices, *r, remote_indices));
  KVF_ASSIGN_OR_RETURN(auto rt, route(r->peer, l->kind, r->kind, merged.total_bytes, merged.pieces.size(),
                                      options.backend));
  if (rt.generation != r->peer_generation)
    return FailedPrecondition("create_transfer: the remote prepared list is stale: peer '" + r->peer +
                              "' was reloaded since; prepare it again");
  if (self)  // both sides are ours: pin the "remote" regions too
    merged.local_region_ids.insert(merged.local_region_ids.end(), r->region_ids.begin(), r->region_ids.end());
  return make_request(op, parts_of(std::move(merged), local_indices.size()), t0, r->peer, rt, std::move(options));
}

Result<TransferRequest> Agent::Impl::make_request(TransferOp op, RequestParts parts,
                                                  std::chrono::steady_clock::time_point t0, const std::string& peer,
                                                  const Route& rt, TransferOptions options) {
  if (options.notification && options.notification->size() > options_.max_notification_bytes)
    return InvalidArgument("notification of " + std::to_string(options.notification->size()) +
                           " bytes exceeds the " + std::to_string(options_.max_notification_bytes) + "-byte cap");
  detail::RequestState::Plan plan;
  plan.owner = instance_;
  plan.peer = peer;
  plan.op = op;
  plan.total_bytes = parts.total_bytes;
  plan.pieces = std::move(parts.pieces);
  plan.local_regions = std::make_shared<const std::vector<std::uint64_t>>(std::move(parts.local_region_ids));
  plan.descriptors_requested = parts.requested;
  if (options.notification) plan.notification = detail::encode_notification(options.tag, *options.notification);
  plan.tag = options.tag;
  plan.backend_name = rt.backend;
  plan.connection = rt.connection;
  plan.counters = rt.counters;
  plan.registry = registry_;
  plan.prepare_ns = ns_since(t0);
  return TransferRequest(std::make_shared<detail::RequestState>(std::move(plan)));
}

}  // namespace kvferry
