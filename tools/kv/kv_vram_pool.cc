#ifdef KVFERRY_HAVE_CUDA
#include "kv/kv_vram_pool.h"

#include <algorithm>
#include <vector>

#include "kv/kv_host_pool.h"

namespace kvferry::cli {
namespace {

// Host bytes one check batch gathers: bounded whatever the step's size.
constexpr std::uint64_t kCheckBatchBytes = std::uint64_t{64} << 20;

}  // namespace

Result<std::unique_ptr<KvVramPool>> KvVramPool::allocate(const KvLayout& layout, int device,
                                                         std::uint8_t fill) {
  KVF_ASSIGN_OR_RETURN(DeviceBuffer memory, DeviceBuffer::allocate(device, layout.pool_bytes()));
  const ByteRange whole{0, memory.size()};
  KVF_RETURN_IF_ERROR(memory.fill({&whole, 1}, fill).with_context("initialising the GPU pool"));
  KVF_ASSIGN_OR_RETURN(KvPool pool, KvPool::create_contiguous(layout, MemoryKind::kVram, memory.address(),
                                                              static_cast<std::uint32_t>(device)));
  return std::unique_ptr<KvVramPool>(new KvVramPool(std::move(memory), std::move(pool)));
}

ByteRange KvVramPool::segment(std::uint32_t lane, std::uint32_t block) const {
  return ByteRange{pool_.segment_address(lane, block) - memory_.address(), pool_.layout().segment_bytes()};
}

Status KvVramPool::fill_pattern() {
  const KvLayout& layout = pool_.layout();
  std::vector<std::uint8_t> image(layout.tensor_bytes());
  for (std::uint32_t tensor = 0; tensor < layout.tensor_count(); ++tensor) {
    std::fill(image.begin(), image.end(), std::uint8_t{0});  // as a host pool: bytes outside segments are 0
    for (std::uint32_t lane = 0; lane < layout.lane_count(); ++lane) {
      if (layout.tensor_of_lane(lane) != tensor) continue;
      for (std::uint32_t b = 0; b < layout.blocks(); ++b) {
        fill_kv_segment(layout, image.data() + layout.segment_offset(lane, b), lane, b);
      }
    }
    const std::uint64_t offset = pool_.tensor_addresses()[tensor] - memory_.address();
    KVF_RETURN_IF_ERROR(memory_.upload(offset, image.data(), image.size())
                            .with_context("uploading tensor " + std::to_string(tensor) + " of the pool"));
  }
  return Status::Ok();
}

Status KvVramPool::poison(std::span<const std::uint32_t> blocks) {
  std::vector<ByteRange> ranges;
  ranges.reserve(blocks.size() * pool_.layout().lane_count());
  for (std::uint32_t block : blocks) {
    for (std::uint32_t lane = 0; lane < pool_.layout().lane_count(); ++lane)
      ranges.push_back(segment(lane, block));
  }
  return memory_.fill(ranges, kKvPoisonByte).with_context("poisoning destination blocks");
}

Result<std::optional<std::string>> KvVramPool::check(std::span<const std::uint32_t> destination,
                                                     std::span<const std::uint32_t> source) {
  const KvLayout& layout = pool_.layout();
  const std::uint64_t segment_bytes = layout.segment_bytes();
  const std::size_t per_batch =
      static_cast<std::size_t>(std::max<std::uint64_t>(1, kCheckBatchBytes / segment_bytes));
  struct Item {
    std::uint32_t lane, destination, source;
  };
  std::vector<Item> items;
  std::vector<ByteRange> ranges;
  std::vector<std::uint8_t> host;
  const auto check_batch = [&]() -> Result<std::optional<std::string>> {
    host.resize(ranges.size() * segment_bytes);
    KVF_RETURN_IF_ERROR(memory_.gather(ranges, host.data()).with_context("downloading pulled blocks"));
    for (std::size_t k = 0; k < items.size(); ++k) {
      const Item& it = items[k];
      if (auto bad =
              check_kv_segment(layout, host.data() + k * segment_bytes, it.lane, it.destination, it.source))
        return bad;
    }
    items.clear();
    ranges.clear();
    return std::optional<std::string>();
  };
  for (std::size_t i = 0; i < destination.size(); ++i) {
    for (std::uint32_t lane = 0; lane < layout.lane_count(); ++lane) {
      items.push_back({lane, destination[i], source[i]});
      ranges.push_back(segment(lane, destination[i]));
      if (items.size() < per_batch) continue;
      KVF_ASSIGN_OR_RETURN(std::optional<std::string> bad, check_batch());
      if (bad) return bad;
    }
  }
  if (items.empty()) return std::optional<std::string>();
  return check_batch();
}

}  // namespace kvferry::cli
#endif  // KVFERRY_HAVE_CUDA
