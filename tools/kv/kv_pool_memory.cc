#include "kv/kv_pool_memory.h"

#include "kv/kv_host_pool.h"
#include "kv/kv_vram_pool.h"

namespace kvferry::cli {
namespace {

class HostKvPoolMemory final : public KvPoolMemory {
 public:
  explicit HostKvPoolMemory(KvHostPool pool) : pool_(std::move(pool)) {}

  const KvPool& pool() const override { return pool_.pool(); }
  Status fill_pattern() override {
    fill_kv_pattern(pool_);
    return Status::Ok();
  }
  Status poison(std::span<const std::uint32_t> blocks) override {
    for (std::uint32_t block : blocks) poison_kv_block(pool_, block, 0, pool_.layout().lane_count());
    return Status::Ok();
  }
  Result<std::optional<std::string>> check(std::span<const std::uint32_t> destination,
                                           std::span<const std::uint32_t> source) override {
    for (std::size_t i = 0; i < destination.size(); ++i) {
      if (auto bad = check_kv_block(pool_, destination[i], source[i], 0, pool_.layout().lane_count()))
        return bad;
    }
    return std::optional<std::string>();
  }

 private:
  KvHostPool pool_;
};

}  // namespace

std::string describe_kv_memory(const KvMemoryOptions& options) {
  return options.mem == "vram" ? "GPU " + std::to_string(options.device) + " memory" : "host memory";
}

Result<std::unique_ptr<KvPoolMemory>> allocate_kv_pool_memory(const KvLayout& layout,
                                                              const KvMemoryOptions& options,
                                                              std::uint8_t fill, Agent* shared_by) {
  if (options.mem == "vram") {
#ifdef KVFERRY_HAVE_CUDA
    KVF_ASSIGN_OR_RETURN(std::unique_ptr<KvVramPool> pool,
                         KvVramPool::allocate(layout, options.device, fill));
    return std::unique_ptr<KvPoolMemory>(std::move(pool));
#else
    return NotSupported("--mem vram: this kvferry was built without CUDA");
#endif
  }
  if (options.mem != "dram") return InvalidArgument("--mem '" + options.mem + "': expected dram or vram");
  KVF_ASSIGN_OR_RETURN(KvHostPool pool, KvHostPool::allocate(layout, fill, shared_by));
  return std::unique_ptr<KvPoolMemory>(new HostKvPoolMemory(std::move(pool)));
}

}  // namespace kvferry::cli
