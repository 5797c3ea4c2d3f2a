// kv_host_pool.h — a KV pool in host memory for `kvferry serve` / `pull`: a HostPool
// (host_pool.h: one allocation carved into the layout's tensors, pre-faulted), whose
// tensors are registered each on its own, as an engine's per-layer tensors are.
// For backends that map a peer's memory (backend_traits.h: wants_shared_pool) it comes
// from the agent's allocate_shared_memory, as `kvferry bench` does, so the two compare.
// Also the pool's contents: segment (lane, block) of the server holds the pattern of
// (lane, block) (block_pattern.h: every 8-byte word a mix of key and offset), so a
// client checks every byte it pulled without a second copy of the data.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/host_pool.h"
#include "kvferry/kvferry.h"

namespace kvferry::cli {

class KvHostPool {
 public:
  // Maps layout.pool_bytes() (from `shared_by`'s allocate_shared_memory when given,
  // else anonymous pages) and writes `fill` to every byte. Shared memory must be
  // deregistered, or its agent destroyed, before the pool goes away.
  static Result<KvHostPool> allocate(const KvLayout& layout, std::uint8_t fill, Agent* shared_by = nullptr);

  const KvPool& pool() const { return host_.pool(); }
  const KvLayout& layout() const { return host_.layout(); }
  std::uint8_t* segment(std::uint32_t lane, std::uint32_t block) const { return host_.segment(lane, block); }

 private:
  explicit KvHostPool(HostPool host) : host_(std::move(host)) {}
  HostPool host_;
};

// Fixed, so any server and any client agree on what block (lane, b) holds.
inline constexpr std::uint64_t kKvServeSeed = 0x4B5653455256453Full;  // "KVSERVE?"

// The server's contents: every segment (lane, block) gets its pattern.
void fill_kv_pattern(const KvHostPool& pool);

// The same, one segment at a time, for pools whose bytes are not host memory (a GPU
// pool fills a host image and uploads it; kv_pool_memory.h): `bytes` is segment_bytes()
// long and receives the pattern of server segment (lane, block).
void fill_kv_segment(const KvLayout& layout, std::uint8_t* bytes, std::uint32_t lane, std::uint32_t block);
// `bytes` (segment (lane, destination), wherever it was copied to) must hold the pattern
// of server segment (lane, source); the first difference, described, or nullopt.
std::optional<std::string> check_kv_segment(const KvLayout& layout, const std::uint8_t* bytes,
                                            std::uint32_t lane, std::uint32_t destination,
                                            std::uint32_t source);

// Lanes [first_lane, end_lane) of destination block `destination` must hold the
// pattern of source block `source`; the first difference, described, or nullopt.
std::optional<std::string> check_kv_block(const KvHostPool& pool, std::uint32_t destination,
                                          std::uint32_t source, std::uint32_t first_lane,
                                          std::uint32_t end_lane);

inline constexpr std::uint8_t kKvPoisonByte = 0xAB;
// Overwrites the block in those lanes, so stale bytes of an earlier step cannot pass.
void poison_kv_block(const KvHostPool& pool, std::uint32_t block, std::uint32_t first_lane,
                     std::uint32_t end_lane);

}  // namespace kvferry::cli
