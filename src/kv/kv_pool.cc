#include "kvferry/kv/kv_pool.h"

#include <algorithm>
#include <limits>
#include <string>

namespace kvferry {

Result<KvPool> KvPool::create(const KvLayout& layout, MemoryKind kind,
                              std::vector<std::uint64_t> tensor_addresses, std::uint32_t device) {
  if (tensor_addresses.size() != layout.tensor_count()) {
    return InvalidArgument("kv pool: the layout has " + std::to_string(layout.tensor_count()) +
                           " tensors but " + std::to_string(tensor_addresses.size()) +
                           " addresses were given");
  }
  const std::uint64_t bytes = layout.tensor_bytes();
  std::vector<std::uint64_t> sorted = tensor_addresses;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i] > std::numeric_limits<std::uint64_t>::max() - bytes) {
      return InvalidArgument("kv pool: a tensor at " + std::to_string(sorted[i]) +
                             " runs past the address space");
    }
    if (i + 1 < sorted.size() && sorted[i] + bytes > sorted[i + 1]) {
      return InvalidArgument("kv pool: tensors at " + std::to_string(sorted[i]) + " and " +
                             std::to_string(sorted[i + 1]) + " overlap (each is " + std::to_string(bytes) +
                             " bytes)");
    }
  }
  return KvPool(layout, kind, device, std::move(tensor_addresses));
}

Result<KvPool> KvPool::create_contiguous(const KvLayout& layout, MemoryKind kind, std::uint64_t base,
                                         std::uint32_t device) {
  std::vector<std::uint64_t> addresses(layout.tensor_count());
  for (std::uint32_t t = 0; t < layout.tensor_count(); ++t) addresses[t] = base + t * layout.tensor_bytes();
  return create(layout, kind, std::move(addresses), device);
}

DescriptorList KvPool::tensor_regions() const {
  DescriptorList list(kind_);
  list.reserve(tensor_addresses_.size());
  for (std::uint64_t address : tensor_addresses_) list.add(address, layout_.tensor_bytes(), device_);
  return list;
}

DescriptorList KvPool::block_descriptors() const {
  std::vector<Descriptor> descriptors;
  descriptors.reserve(layout_.descriptor_count());
  const std::uint64_t length = layout_.segment_bytes();
  for (std::uint32_t lane = 0; lane < layout_.lane_count(); ++lane) {
    const std::uint64_t first = segment_address(lane, 0);
    for (std::uint32_t block = 0; block < layout_.blocks(); ++block) {
      descriptors.push_back(Descriptor{first + block * layout_.block_stride(), length, device_});
    }
  }
  return DescriptorList(kind_, std::move(descriptors));
}

BlockLanes KvPool::block_lanes() const {
  BlockLanes lanes;
  lanes.kind = kind_;
  lanes.device = device_;
  lanes.lane_addresses.reserve(layout_.lane_count());
  for (std::uint32_t lane = 0; lane < layout_.lane_count(); ++lane) lanes.lane_addresses.push_back(segment_address(lane, 0));
  lanes.block_stride = layout_.block_stride();
  lanes.block_bytes = layout_.segment_bytes();
  lanes.blocks = layout_.blocks();
  return lanes;
}

}  // namespace kvferry
