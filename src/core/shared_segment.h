// SharedSegment: one memfd-backed mapping made by Agent::allocate_shared_memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/socket_util.h"
#include "kvferry/status.h"

namespace kvferry::detail {

class SharedSegment {
 public:
  // memfd_create + ftruncate + mmap(MAP_SHARED | MAP_POPULATE). Tries MFD_HUGETLB first,
  // then ordinary pages with MADV_HUGEPAGE (transparent huge pages for shmem, if enabled).
  static Result<std::shared_ptr<SharedSegment>> allocate(std::size_t bytes, const std::string& name);
  ~SharedSegment();
  SharedSegment(const SharedSegment&) = delete;
  SharedSegment& operator=(const SharedSegment&) = delete;

  void* base() const { return base_; }
  std::size_t size() const { return size_; }
  int fd() const { return fd_.get(); }
  bool huge_pages() const { return huge_; }
  bool contains(std::uint64_t address, std::uint64_t length) const {
    auto b = reinterpret_cast<std::uint64_t>(base_);
    return address >= b && address - b <= size_ && length <= size_ - (address - b);
  }

 private:
  SharedSegment() = default;
  UniqueFd fd_;
  void* base_ = nullptr;
  std::size_t size_ = 0;
  bool huge_ = false;
};

}  // namespace kvferry::detail
