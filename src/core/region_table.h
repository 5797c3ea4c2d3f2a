// RegionTable: a backend's own table of registered regions, for the check a target makes
// on every untrusted request: which region holds all of [address, address + length)?
// Keyed by start address (regions of one agent never overlap: core/memory_registry.h),
// with a per-region value of the backend's (tcp: nothing; ucx: memory handle, packed key).
//
// Not thread-safe: a backend keeps it on its progress thread or under its own lock.
#pragma once

#include <cstdint>
#include <map>
#include <unordered_map>

#include "core/backend.h"

namespace kvferry::detail {

// True when [address, address + length) lies inside `region` (overflow-safe).
inline bool region_holds(const RegionInfo& region, std::uint64_t address, std::uint64_t length) {
  return address >= region.address && address - region.address <= region.length &&
         length <= region.address + region.length - address;
}

struct NoValue {};

template <typename T = NoValue>
class RegionTable {
 public:
  struct Entry {
    RegionInfo info;
    T value{};
  };

  // Adds a region (replacing any entry with its id or its start address).
  Entry& add(const RegionInfo& info, T value = T{}) {
    erase(info.id);
    if (auto it = by_address_.find(info.address); it != by_address_.end()) erase(it->second.info.id);
    id_to_address_[info.id] = info.address;
    Entry& e = by_address_[info.address];
    e.info = info;
    e.value = std::move(value);
    return e;
  }
  // False if no region has that id.
  bool erase(std::uint64_t id) {
    auto it = id_to_address_.find(id);
    if (it == id_to_address_.end()) return false;
    by_address_.erase(it->second);
    id_to_address_.erase(it);
    return true;
  }
  Entry* find(std::uint64_t id) {
    auto it = id_to_address_.find(id);
    return it == id_to_address_.end() ? nullptr : &by_address_.at(it->second);
  }
  // The region that holds all of [address, address + length), or null.
  Entry* holding(std::uint64_t address, std::uint64_t length) {
    auto it = by_address_.upper_bound(address);
    if (it == by_address_.begin()) return nullptr;
    --it;
    return region_holds(it->second.info, address, length) ? &it->second : nullptr;
  }
  const Entry* holding(std::uint64_t address, std::uint64_t length) const {
    return const_cast<RegionTable*>(this)->holding(address, length);
  }

  std::size_t size() const { return by_address_.size(); }
  bool empty() const { return by_address_.empty(); }
  // Every entry in address order: for (auto& [address, entry] : table).
  auto begin() { return by_address_.begin(); }
  auto end() { return by_address_.end(); }
  auto begin() const { return by_address_.begin(); }
  auto end() const { return by_address_.end(); }

 private:
  std::map<std::uint64_t, Entry> by_address_;
  std::unordered_map<std::uint64_t, std::uint64_t> id_to_address_;
};

}  // namespace kvferry::detail
