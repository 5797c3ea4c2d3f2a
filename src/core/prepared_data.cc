#include "core/prepared_data.h"

#include <algorithm>
#include <string>
#include <tuple>

namespace kvferry::detail {

const RegionInfo* find_region_in_sorted(const std::vector<RegionInfo>& sorted, MemoryKind kind, const Descriptor& d) {
  auto it = std::upper_bound(sorted.begin(), sorted.end(), std::make_tuple(kind, d.device, d.address),
                             [](const auto& key, const RegionInfo& r) {
                               return key < std::make_tuple(r.kind, r.device, r.address);
                             });
  if (it == sorted.begin()) return nullptr;
  --it;
  if (it->kind != kind || it->device != d.device) return nullptr;
  if (d.address - it->address > it->length || d.length > it->address + it->length - d.address) return nullptr;
  return &*it;
}

Result<MergeResult> merge_index_pairs(const PreparedData& local, std::span<const std::uint32_t> local_idx,
                                      const PreparedData& remote, std::span<const std::uint32_t> remote_idx) {
  if (local_idx.size() != remote_idx.size())
    return InvalidArgument("index transfer: " + std::to_string(local_idx.size()) + " local indices but " +
                           std::to_string(remote_idx.size()) + " remote indices");
  if (local_idx.empty()) return InvalidArgument("index transfer: no indices");
  const std::size_t nl = local.descriptors.size();
  const std::size_t nr = remote.descriptors.size();
  MergeResult out;
  out.pieces.reserve(local_idx.size());
  // Which local regions are used: a small bitmap over the prepared list's regions.
  std::vector<bool> used(local.region_ids.size(), false);
  std::uint32_t prev_lr = UINT32_MAX, prev_rr = UINT32_MAX;
  for (std::size_t i = 0; i < local_idx.size(); ++i) {
    const std::uint32_t li = local_idx[i], ri = remote_idx[i];
    if (li >= nl || ri >= nr) {
      return OutOfRange("index transfer: pair " + std::to_string(i) + " uses index " +
                        std::to_string(li >= nl ? li : ri) + " but the " + (li >= nl ? "local" : "remote") +
                        " prepared list has " + std::to_string(li >= nl ? nl : nr) + " descriptors");
    }
    const Descriptor& l = local.descriptors[li];
    const Descriptor& r = remote.descriptors[ri];
    if (l.length != r.length) {
      return InvalidArgument("index transfer: pair " + std::to_string(i) + " has local length " +
                             std::to_string(l.length) + " but remote length " + std::to_string(r.length));
    }
    const std::uint32_t lr = local.region_of[li], rr = remote.region_of[ri];
    out.total_bytes += l.length;
    if (!out.pieces.empty() && lr == prev_lr && rr == prev_rr) {
      TransferPiece& last = out.pieces.back();
      if (last.local + last.length == l.address && last.remote + last.length == r.address) {
        last.length += l.length;
        continue;
      }
    }
    out.pieces.push_back(TransferPiece{l.address, r.address, l.length, l.device, r.device});
    prev_lr = lr;
    prev_rr = rr;
    used[lr] = true;
  }
  for (std::size_t k = 0; k < used.size(); ++k)
    if (used[k]) out.local_region_ids.push_back(local.region_ids[k]);
  return out;
}

}  // namespace kvferry::detail
