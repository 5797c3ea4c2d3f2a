// kvferry/shared_memory.h — host memory that agents on the same host can map.
//
// Contract
// - Made by `Agent::allocate_shared_memory`: memfd-backed, pre-faulted, on huge pages
//   when the system allows. Use it as a KV pool and register it like any memory; a
//   same-host backend then hands the memfd (never a path) to connected peers, which map
//   it once and move bytes with plain memory copies.
// - Move-only owner of the mapping. Destroying it unmaps the memory here; deregister it
//   first, as with any registered memory. Peers that mapped it keep their mapping until
//   they disconnect, so freeing it never lets a peer touch other memory of ours.
// - data()/size() are safe to call from any thread.
#pragma once

#include <cstddef>
#include <memory>

#include "kvferry/memory.h"

namespace kvferry {

namespace detail {
class SharedSegment;
}

class SharedMemory {
 public:
  SharedMemory() = default;
  SharedMemory(SharedMemory&&) noexcept = default;
  SharedMemory& operator=(SharedMemory&&) noexcept = default;
  ~SharedMemory();

  void* data() const;
  std::size_t size() const;
  bool valid() const { return segment_ != nullptr; }
  // Whether the kernel backs it with huge pages (fewer TLB misses on large copies).
  bool huge_pages() const;
  // One descriptor covering the whole allocation, ready for register_memory.
  DescriptorList descriptors() const;

 private:
  friend class Agent;
  explicit SharedMemory(std::shared_ptr<detail::SharedSegment> segment) : segment_(std::move(segment)) {}
  std::shared_ptr<detail::SharedSegment> segment_;
};

}  // namespace kvferry
