#include "kv/kv_host_pool.h"

#include <cstring>

#include "common/block_pattern.h"

namespace kvferry::cli {

Result<KvHostPool> KvHostPool::allocate(const KvLayout& layout, std::uint8_t fill, Agent* shared_by) {
  KVF_ASSIGN_OR_RETURN(HostPool host, HostPool::allocate(layout, fill, shared_by));
  return KvHostPool(std::move(host));
}

void fill_kv_segment(const KvLayout& layout, std::uint8_t* bytes, std::uint32_t lane, std::uint32_t block) {
  fill_pattern(bytes, layout.segment_bytes(), pattern_key(kKvServeSeed, lane, block));
}

void fill_kv_pattern(const KvHostPool& pool) {
  const KvLayout& layout = pool.layout();
  for (std::uint32_t lane = 0; lane < layout.lane_count(); ++lane) {
    for (std::uint32_t b = 0; b < layout.blocks(); ++b) fill_kv_segment(layout, pool.segment(lane, b), lane, b);
  }
}

std::optional<std::string> check_kv_segment(const KvLayout& layout, const std::uint8_t* bytes,
                                            std::uint32_t lane, std::uint32_t destination,
                                            std::uint32_t source) {
  const auto bad = find_pattern_mismatch(bytes, layout.segment_bytes(), pattern_key(kKvServeSeed, lane, source));
  if (!bad) return std::nullopt;
  return "layer " + std::to_string(layout.layer_of_lane(lane)) + " lane " + std::to_string(lane) + ": block " +
         std::to_string(destination) + " (from server block " + std::to_string(source) + ") differs at byte " +
         std::to_string(*bad);
}

std::optional<std::string> check_kv_block(const KvHostPool& pool, std::uint32_t destination,
                                          std::uint32_t source, std::uint32_t first_lane,
                                          std::uint32_t end_lane) {
  for (std::uint32_t lane = first_lane; lane < end_lane; ++lane) {
    if (auto bad = check_kv_segment(pool.layout(), pool.segment(lane, destination), lane, destination, source)) {
      return bad;
    }
  }
  return std::nullopt;
}

void poison_kv_block(const KvHostPool& pool, std::uint32_t block, std::uint32_t first_lane,
                     std::uint32_t end_lane) {
  for (std::uint32_t lane = first_lane; lane < end_lane; ++lane) {
    std::memset(pool.segment(lane, block), kKvPoisonByte, pool.layout().segment_bytes());
  }
}

}  // namespace kvferry::cli
