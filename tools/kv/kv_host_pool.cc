#include "kv/kv_host_pool.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "common/block_pattern.h"

namespace kvferry::cli {

Result<KvHostPool> KvHostPool::allocate(const KvLayout& layout, std::uint8_t fill, Agent* shared_by) {
  const std::uint64_t bytes = layout.pool_bytes();
  SharedMemory shared;
  void* memory = nullptr;
  if (shared_by != nullptr) {
    KVF_ASSIGN_OR_RETURN(shared, shared_by->allocate_shared_memory(bytes));
  } else {
    memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) {
      return IoErrorFromErrno("allocating a KV pool of " + std::to_string(bytes) + " bytes", errno);
    }
  }
  void* base = shared.valid() ? shared.data() : memory;
  std::memset(base, fill, bytes);
  Result<KvPool> pool =
      KvPool::create_contiguous(layout, MemoryKind::kDram, reinterpret_cast<std::uint64_t>(base));
  if (!pool.ok()) {
    if (memory != nullptr) munmap(memory, bytes);
    return pool.status();
  }
  return KvHostPool(std::move(pool).value(), memory, bytes, std::move(shared));
}

KvHostPool::KvHostPool(KvHostPool&& other) noexcept
    : pool_(std::move(other.pool_)),
      memory_(other.memory_),
      bytes_(other.bytes_),
      shared_(std::move(other.shared_)) {
  other.memory_ = nullptr;
}

KvHostPool::~KvHostPool() {
  if (memory_ != nullptr) munmap(memory_, bytes_);
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
