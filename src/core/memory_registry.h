// MemoryRegistry: this agent's registered regions, lookup, and in-flight pins.
//
// A region is pinned while a posted transfer uses it; deregistering a pinned region is
// refused. Thread-safe (one internal mutex; lookups are O(log regions)).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <tuple>
#include <vector>

#include "core/backend.h"
#include "kvferry/memory.h"
#include "kvferry/status.h"

namespace kvferry::detail {

class MemoryRegistry {
 public:
  // Region ids count up from `first_id`; an agent starts at a random point so that its
  // ids are unique to its instance (never confused with another agent's).
  explicit MemoryRegistry(std::uint64_t first_id = 1) : next_id_(first_id) {}
  // Validates (non-empty, no overlap with each other or with existing regions) and
  // assigns ids. Does not insert: call commit() once the backends accepted them.
  Result<std::vector<RegionInfo>> plan_add(const DescriptorList& list) const;
  void commit_add(const std::vector<RegionInfo>& regions);
  // Removes the exact regions (all or none); fails if any is unknown or pinned. Atomic
  // with pin(), so a transfer can never start on memory being deregistered.
  Result<std::vector<RegionInfo>> remove(const DescriptorList& list);

  // The region that contains [address, address + length) of that kind and device.
  Result<RegionInfo> find(MemoryKind kind, const Descriptor& d) const;
  bool alive(std::uint64_t region_id) const;
  // Pins every id (all or none); fails if one is gone.
  Status pin(std::span<const std::uint64_t> ids);
  void unpin(std::span<const std::uint64_t> ids);

  std::vector<RegionInfo> snapshot() const;

 private:
  using Key = std::tuple<std::uint8_t, std::uint32_t, std::uint64_t>;  // kind, device, address
  struct Entry {
    RegionInfo info;
    std::uint64_t pins = 0;
  };
  const Entry* find_locked(MemoryKind kind, const Descriptor& d) const;
  bool overlaps_locked(MemoryKind kind, const Descriptor& d) const;

  mutable std::mutex mu_;
  std::map<Key, Entry> by_address_;
  std::map<std::uint64_t, Key> by_id_;
  mutable std::uint64_t next_id_ = 1;
};

}  // namespace kvferry::detail
