#include "core/memory_registry.h"

#include <algorithm>
#include <string>

#include "core/describe.h"

namespace kvferry::detail {

const MemoryRegistry::Entry* MemoryRegistry::find_locked(MemoryKind kind, const Descriptor& d) const {
  Key key{static_cast<std::uint8_t>(kind), d.device, d.address};
  auto it = by_address_.upper_bound(key);
  if (it == by_address_.begin()) return nullptr;
  --it;
  const RegionInfo& r = it->second.info;
  if (r.kind != kind || r.device != d.device) return nullptr;
  if (d.address < r.address || d.address - r.address > r.length || d.length > r.address + r.length - d.address)
    return nullptr;
  return &it->second;
}

bool MemoryRegistry::overlaps_locked(MemoryKind kind, const Descriptor& d) const {
  Key lo{static_cast<std::uint8_t>(kind), d.device, d.address};
  auto it = by_address_.upper_bound(lo);
  if (it != by_address_.begin()) {
    auto prev = std::prev(it);
    const RegionInfo& r = prev->second.info;
    if (r.kind == kind && r.device == d.device && r.address + r.length > d.address) return true;
  }
  if (it != by_address_.end()) {
    const RegionInfo& r = it->second.info;
    if (r.kind == kind && r.device == d.device && r.address < d.end()) return true;
  }
  // An existing region starting exactly at d.address is found by upper_bound's prev.
  return false;
}

Result<std::vector<RegionInfo>> MemoryRegistry::plan_add(const DescriptorList& list) const {
  if (list.empty()) return InvalidArgument("register_memory: the list is empty");
  std::lock_guard lock(mu_);
  std::vector<RegionInfo> out;
  out.reserve(list.size());
  for (std::size_t i = 0; i < list.size(); ++i) {
    const Descriptor& d = list[i];
    if (d.length == 0) return InvalidArgument("register_memory: descriptor " + std::to_string(i) + " has length 0");
    if (d.address == 0 && list.kind() != MemoryKind::kFile)  // a file region starts at offset 0
      return InvalidArgument("register_memory: descriptor " + std::to_string(i) + " has a null address");
    if (d.address + d.length < d.address)
      return InvalidArgument("register_memory: descriptor " + std::to_string(i) + " wraps around the address space");
    if (overlaps_locked(list.kind(), d))
      return AlreadyExists("register_memory: descriptor " + std::to_string(i) + " " + describe(list.kind(), d) +
                           " overlaps a registered region");
    for (const RegionInfo& other : out) {
      if (other.device == d.device && other.address < d.end() && d.address < other.address + other.length)
        return AlreadyExists("register_memory: descriptors in the list overlap each other at " +
                             describe(list.kind(), d));
    }
    out.push_back(RegionInfo{next_id_ + i, list.kind(), d.device, d.address, d.length});
  }
  return out;
}

void MemoryRegistry::commit_add(const std::vector<RegionInfo>& regions) {
  std::lock_guard lock(mu_);
  for (const RegionInfo& r : regions) {
    Key key{static_cast<std::uint8_t>(r.kind), r.device, r.address};
    by_address_.emplace(key, Entry{r, 0});
    by_id_.emplace(r.id, key);
    next_id_ = std::max(next_id_, r.id + 1);
  }
}

Result<std::vector<RegionInfo>> MemoryRegistry::remove(const DescriptorList& list) {
  if (list.empty()) return InvalidArgument("deregister_memory: the list is empty");
  std::lock_guard lock(mu_);
  std::vector<RegionInfo> out;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const Descriptor& d = list[i];
    auto it = by_address_.find(Key{static_cast<std::uint8_t>(list.kind()), d.device, d.address});
    if (it == by_address_.end() || it->second.info.length != d.length)
      return NotFound("deregister_memory: " + describe(list.kind(), d) + " is not a registered region");
    if (it->second.pins > 0)
      return FailedPrecondition("deregister_memory: " + describe(list.kind(), d) + " is used by " +
                                std::to_string(it->second.pins) + " posted transfer(s)");
    out.push_back(it->second.info);
  }
  for (const RegionInfo& r : out) {
    by_address_.erase(Key{static_cast<std::uint8_t>(r.kind), r.device, r.address});
    by_id_.erase(r.id);
  }
  return out;
}

Result<RegionInfo> MemoryRegistry::find(MemoryKind kind, const Descriptor& d) const {
  std::lock_guard lock(mu_);
  const Entry* e = find_locked(kind, d);
  if (!e) return OutOfRange(describe(kind, d) + " is not inside registered memory");
  return e->info;
}

bool MemoryRegistry::alive(std::uint64_t region_id) const {
  std::lock_guard lock(mu_);
  return by_id_.count(region_id) != 0;
}

Status MemoryRegistry::pin(std::span<const std::uint64_t> ids) {
  std::lock_guard lock(mu_);
  for (std::uint64_t id : ids) {
    if (!by_id_.count(id))
      return FailedPrecondition("memory used by this transfer was deregistered after it was prepared");
  }
  for (std::uint64_t id : ids) by_address_.at(by_id_.at(id)).pins++;
  return Status::Ok();
}

void MemoryRegistry::unpin(std::span<const std::uint64_t> ids) {
  std::lock_guard lock(mu_);
  for (std::uint64_t id : ids) {
    auto it = by_id_.find(id);
    if (it != by_id_.end()) by_address_.at(it->second).pins--;
  }
}

std::vector<RegionInfo> MemoryRegistry::snapshot() const {
  std::lock_guard lock(mu_);
  std::vector<RegionInfo> out;
  out.reserve(by_address_.size());
  for (const auto& [key, e] : by_address_) out.push_back(e.info);
  return out;
}

}  // namespace kvferry::detail
