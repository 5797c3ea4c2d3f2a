#include "demo/demo_pool.h"

#include <string>
#include <vector>

#include "common/block_pattern.h"
#include "demo/demo_options.h"

#ifdef KVFERRY_HAVE_CUDA
#include "common/device_buffer.h"
#endif

namespace kvferry::cli {
namespace {

// The flashinfer layout keeps a layer's blocks back to back in its tensor: one layer is
// blocks() * block_bytes() contiguous bytes.
[[maybe_unused]] std::uint64_t layer_bytes(const KvLayout& layout) { return layout.tensor_bytes(); }

void fill_prefill_layer(const KvLayout& layout, std::uint32_t layer, std::uint8_t* bytes) {
  for (std::uint32_t b = 0; b < layout.blocks(); ++b) {
    fill_pattern(bytes + std::uint64_t{b} * layout.block_bytes(), layout.block_bytes(),
                 pattern_key(kDemoSeed, layer, b));
  }
}

}  // namespace

#ifdef KVFERRY_HAVE_CUDA
struct DemoPool::Gpu {
  DeviceBuffer memory;
};
#else
struct DemoPool::Gpu {};
#endif

Result<DemoPool> DemoPool::allocate(const KvLayout& layout, MemoryKind kind, int device, std::uint8_t fill,
                                    Agent* shared_by) {
  if (layout.lanes_per_layer() != 1 || layout.tensor_count() != layout.geometry().layers) {
    return InvalidArgument("a demo pool holds one tensor per layer with K and V together in a block");
  }
  DemoPool pool;
  if (kind == MemoryKind::kDram) {
    KVF_ASSIGN_OR_RETURN(HostPool host, HostPool::allocate(layout, fill, shared_by));
    pool.pool_.emplace(host.pool());
    pool.host_ = std::make_unique<HostPool>(std::move(host));
    return pool;
  }
  if (kind != MemoryKind::kVram) return InvalidArgument("a demo pool is dram or vram memory");
#ifdef KVFERRY_HAVE_CUDA
  KVF_ASSIGN_OR_RETURN(DeviceBuffer memory, DeviceBuffer::allocate(device, layout.pool_bytes()));
  const ByteRange whole{0, memory.size()};
  KVF_RETURN_IF_ERROR(memory.fill({&whole, 1}, fill).with_context("initialising the GPU pool"));
  KVF_ASSIGN_OR_RETURN(KvPool described, KvPool::create_contiguous(layout, MemoryKind::kVram, memory.address(),
                                                                   static_cast<std::uint32_t>(device)));
  pool.pool_.emplace(std::move(described));
  pool.gpu_ = std::make_unique<Gpu>(Gpu{std::move(memory)});
  return pool;
#else
  (void)device;
  return NotSupported("--mem vram: this kvferry was built without CUDA");
#endif
}

DemoPool::DemoPool() = default;
DemoPool::DemoPool(DemoPool&&) noexcept = default;
DemoPool::~DemoPool() = default;

DescriptorList DemoPool::region() const {
  return DescriptorList(pool_->kind(), {Descriptor{pool_->tensor_addresses().front(), layout().pool_bytes(),
                                                   pool_->device()}});
}

Status DemoPool::fill_prefill_pattern() {
  const KvLayout& l = layout();
  if (host_) {
    for (std::uint32_t layer = 0; layer < l.geometry().layers; ++layer) {
      fill_prefill_layer(l, layer, host_->segment(layer, 0));
    }
    return Status::Ok();
  }
#ifdef KVFERRY_HAVE_CUDA
  std::vector<std::uint8_t> image(layer_bytes(l));
  for (std::uint32_t layer = 0; layer < l.geometry().layers; ++layer) {
    fill_prefill_layer(l, layer, image.data());
    KVF_RETURN_IF_ERROR(
        gpu_->memory.upload(layer * layer_bytes(l), image.data(), image.size())
            .with_context("uploading layer " + std::to_string(layer) + " of the prefill pool"));
  }
  return Status::Ok();
#else
  return Internal("a demo pool without memory");
#endif
}

Status DemoPool::visit_layers(const std::function<bool(std::uint32_t, const std::uint8_t*)>& visit) {
  const KvLayout& l = layout();
  if (host_) {
    for (std::uint32_t layer = 0; layer < l.geometry().layers; ++layer) {
      if (!visit(layer, host_->segment(layer, 0))) break;
    }
    return Status::Ok();
  }
#ifdef KVFERRY_HAVE_CUDA
  std::vector<std::uint8_t> image(layer_bytes(l));
  for (std::uint32_t layer = 0; layer < l.geometry().layers; ++layer) {
    KVF_RETURN_IF_ERROR(
        gpu_->memory.download(layer * layer_bytes(l), image.data(), image.size())
            .with_context("downloading layer " + std::to_string(layer) + " of the decode pool"));
    if (!visit(layer, image.data())) break;
  }
  return Status::Ok();
#else
  (void)visit;
  return Internal("a demo pool without memory");
#endif
}

}  // namespace kvferry::cli
