// TpRankPool in host memory, or (CUDA builds) on a GPU through a host image.
#include "tp/tp_rank_pool.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#ifdef KVFERRY_HAVE_CUDA
#include "common/device_buffer.h"
#endif

namespace kvferry::cli {
namespace {

class HostRankPool final : public TpRankPool {
 public:
  HostRankPool(KvPool pool, std::uint8_t* base, std::uint64_t bytes, SharedMemory shared, std::uint8_t poison)
      : pool_(std::move(pool)), base_(base), bytes_(bytes), shared_(std::move(shared)), poison_(poison) {}
  ~HostRankPool() override {
    if (!shared_.valid()) munmap(base_, bytes_);
  }
  const KvPool& pool() const override { return pool_; }
  Status fill(std::span<const std::uint32_t> blocks, std::uint64_t tokens, HeadRange heads, std::uint64_t seed) override {
    fill_tp_image(pool_.layout(), base_, blocks, tokens, heads, seed);
    return Status::Ok();
  }
  Status poison() override {
    std::memset(base_, poison_, bytes_);
    return Status::Ok();
  }
  Result<std::optional<std::string>> verify(std::span<const std::uint32_t> blocks, std::uint64_t tokens,
                                            HeadRange heads, std::uint64_t seed) override {
    return check_and_clear_tp_image(pool_.layout(), base_, blocks, tokens, heads, seed, poison_);
  }

 private:
  KvPool pool_;
  std::uint8_t* base_;
  std::uint64_t bytes_;
  SharedMemory shared_;
  std::uint8_t poison_;
};

#ifdef KVFERRY_HAVE_CUDA
class GpuRankPool final : public TpRankPool {
 public:
  GpuRankPool(DeviceBuffer memory, KvPool pool, std::uint8_t poison)
      : memory_(std::move(memory)), pool_(std::move(pool)), poison_(poison) {}
  const KvPool& pool() const override { return pool_; }
  Status fill(std::span<const std::uint32_t> blocks, std::uint64_t tokens, HeadRange heads, std::uint64_t seed) override {
    std::vector<std::uint8_t> image(memory_.size(), poison_);
    fill_tp_image(pool_.layout(), image.data(), blocks, tokens, heads, seed);
    return memory_.upload(0, image.data(), image.size());
  }
  Status poison() override {
    const ByteRange all{0, memory_.size()};
    return memory_.fill(std::span<const ByteRange>(&all, 1), poison_);
  }
  Result<std::optional<std::string>> verify(std::span<const std::uint32_t> blocks, std::uint64_t tokens,
                                            HeadRange heads, std::uint64_t seed) override {
    std::vector<std::uint8_t> image(memory_.size());
    KVF_RETURN_IF_ERROR(memory_.download(0, image.data(), image.size()));
    return check_and_clear_tp_image(pool_.layout(), image.data(), blocks, tokens, heads, seed, poison_);
  }

 private:
  DeviceBuffer memory_;
  KvPool pool_;
  std::uint8_t poison_;
};
#endif

}  // namespace

Result<std::unique_ptr<TpRankPool>> TpRankPool::allocate(const KvLayout& layout, MemoryKind kind, int device,
                                                        std::uint8_t poison, Agent* shared_by) {
  const std::uint64_t bytes = layout.pool_bytes();
  if (kind == MemoryKind::kVram) {
#ifdef KVFERRY_HAVE_CUDA
    KVF_ASSIGN_OR_RETURN(DeviceBuffer memory, DeviceBuffer::allocate(device, bytes));
    KVF_ASSIGN_OR_RETURN(KvPool pool, KvPool::create_contiguous(layout, MemoryKind::kVram, memory.address(),
                                                                static_cast<std::uint32_t>(device)));
    auto gpu = std::make_unique<GpuRankPool>(std::move(memory), std::move(pool), poison);
    KVF_RETURN_IF_ERROR(gpu->poison());
    return std::unique_ptr<TpRankPool>(std::move(gpu));
#else
    (void)device;
    return NotSupported("GPU pools need a build with CUDA");
#endif
  }
  SharedMemory shared;
  std::uint8_t* base = nullptr;
  if (shared_by != nullptr) {
    KVF_ASSIGN_OR_RETURN(shared, shared_by->allocate_shared_memory(bytes));
    base = static_cast<std::uint8_t*>(shared.data());
  } else {
    void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return IoErrorFromErrno("allocating a KV pool of " + std::to_string(bytes) + " bytes", errno);
    base = static_cast<std::uint8_t*>(memory);
  }
  std::memset(base, poison, bytes);  // also faults every page in before anything is timed
  Result<KvPool> pool = KvPool::create_contiguous(layout, MemoryKind::kDram, reinterpret_cast<std::uint64_t>(base));
  if (!pool.ok()) {
    if (!shared.valid()) munmap(base, bytes);
    return pool.status();
  }
  return std::unique_ptr<TpRankPool>(
      std::make_unique<HostRankPool>(std::move(pool).value(), base, bytes, std::move(shared), poison));
}

}  // namespace kvferry::cli
