#include "core/shared_segment.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kvferry/shared_memory.h"

namespace kvferry::detail {

Result<std::shared_ptr<SharedSegment>> SharedSegment::allocate(std::size_t bytes, const std::string& name) {
  if (bytes == 0) return InvalidArgument("allocate_shared_memory: size is 0");
  std::shared_ptr<SharedSegment> seg(new SharedSegment());
  const std::string label = "kvferry:" + name;
  // Explicit huge pages first: they only succeed when the admin reserved some.
  constexpr std::size_t kHuge = 2u << 20;
  const std::size_t huge_bytes = (bytes + kHuge - 1) / kHuge * kHuge;
  int fd = ::memfd_create(label.c_str(), MFD_CLOEXEC | MFD_HUGETLB);
  if (fd >= 0) {
    seg->fd_.reset(fd);
    if (::ftruncate(fd, static_cast<off_t>(huge_bytes)) == 0) {
      void* p = ::mmap(nullptr, huge_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
      if (p != MAP_FAILED) {
        seg->base_ = p;
        seg->size_ = bytes;
        seg->huge_ = true;
        return seg;
      }
    }
    seg->fd_.reset();
  }
  fd = ::memfd_create(label.c_str(), MFD_CLOEXEC);
  if (fd < 0) return IoErrorFromErrno("allocate_shared_memory: memfd_create", errno);
  seg->fd_.reset(fd);
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0)
    return IoErrorFromErrno("allocate_shared_memory: ftruncate to " + std::to_string(bytes) + " bytes", errno);
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return IoErrorFromErrno("allocate_shared_memory: mmap", errno);
  seg->base_ = p;
  seg->size_ = bytes;
  // Transparent huge pages for shmem apply when shmem_enabled is "advise" or "always".
  ::madvise(p, bytes, MADV_HUGEPAGE);
  // Pre-fault now: a first transfer into fresh pages would measure the fault handler.
  if (::madvise(p, bytes, MADV_POPULATE_WRITE) != 0) {  // kernels before 5.14: touch each page
    for (std::size_t off = 0; off < bytes; off += 4096) static_cast<volatile char*>(p)[off] = 0;
  }
  return seg;
}

SharedSegment::~SharedSegment() {
  if (base_) ::munmap(base_, huge_ ? (size_ + (2u << 20) - 1) / (2u << 20) * (2u << 20) : size_);
}

}  // namespace kvferry::detail

namespace kvferry {

SharedMemory::~SharedMemory() = default;
void* SharedMemory::data() const { return segment_ ? segment_->base() : nullptr; }
std::size_t SharedMemory::size() const { return segment_ ? segment_->size() : 0; }
bool SharedMemory::huge_pages() const { return segment_ && segment_->huge_pages(); }
DescriptorList SharedMemory::descriptors() const {
  DescriptorList list(MemoryKind::kDram);
  if (segment_) list.add(reinterpret_cast<std::uint64_t>(segment_->base()), segment_->size());
  return list;
}

}  // namespace kvferry
