#include "demo/demo_pool.h"

#include <vector>

#include "common/block_pattern.h"
#include "demo/demo_options.h"

#ifdef KVFERRY_HAVE_CUDA
#include "common/device_buffer.h"
#endif

namespace kvferry::cli {
namespace {

void fill_prefill_layer(const PoolShape& shape, std::uint32_t layer, std::uint8_t* bytes) {
  for (std::uint32_t b = 0; b < shape.blocks_per_layer; ++b) {
    fill_pattern(bytes + std::uint64_t{b} * shape.block_size, shape.block_size,
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

DescriptorList demo_block_descriptors(const PoolShape& shape, std::uint64_t base, MemoryKind kind,
                                      std::uint32_t device) {
  DescriptorList list(kind);
  list.reserve(std::size_t{shape.layers} * shape.blocks_per_layer);
  for (std::uint32_t layer = 0; layer < shape.layers; ++layer) {
    for (std::uint32_t b = 0; b < shape.blocks_per_layer; ++b) {
      list.add(base + std::uint64_t{shape.index_of(layer, b)} * shape.block_size, shape.block_size, device);
    }
  }
  return list;
}

Result<DemoPool> DemoPool::allocate(const PoolShape& shape, MemoryKind kind, int device, std::uint8_t fill,
                                    Agent* shared_by) {
  KVF_RETURN_IF_ERROR(shape.validate());
  DemoPool pool(shape, kind, kind == MemoryKind::kVram ? device : 0);
  if (kind == MemoryKind::kDram) {
    KVF_ASSIGN_OR_RETURN(HostPool host, HostPool::allocate(shape, fill, shared_by));
    pool.host_ = std::make_unique<HostPool>(std::move(host));
    return pool;
  }
  if (kind != MemoryKind::kVram) return InvalidArgument("a demo pool is dram or vram memory");
#ifdef KVFERRY_HAVE_CUDA
  KVF_ASSIGN_OR_RETURN(DeviceBuffer memory, DeviceBuffer::allocate(device, shape.total_bytes()));
  const ByteRange whole{0, memory.size()};
  KVF_RETURN_IF_ERROR(memory.fill({&whole, 1}, fill).with_context("initialising the GPU pool"));
  pool.gpu_ = std::make_unique<Gpu>(Gpu{std::move(memory)});
  return pool;
#else
  return NotSupported("--mem vram: this kvferry was built without CUDA");
#endif
}

DemoPool::DemoPool(PoolShape shape, MemoryKind kind, int device)
    : shape_(shape), kind_(kind), device_(device) {}
DemoPool::DemoPool(DemoPool&&) noexcept = default;
DemoPool::~DemoPool() = default;

std::uint64_t DemoPool::address() const {
#ifdef KVFERRY_HAVE_CUDA
  if (gpu_) return gpu_->memory.address();
#endif
  return host_ ? host_->address() : 0;
}

DescriptorList DemoPool::region() const {
  return DescriptorList(kind_, {Descriptor{address(), shape_.total_bytes(), device()}});
}

Status DemoPool::fill_prefill_pattern() {
  const std::uint64_t layer_bytes = std::uint64_t{shape_.blocks_per_layer} * shape_.block_size;
  if (host_) {
    for (std::uint32_t layer = 0; layer < shape_.layers; ++layer) {
      fill_prefill_layer(shape_, layer, host_->block(layer, 0));
    }
    return Status::Ok();
  }
#ifdef KVFERRY_HAVE_CUDA
  std::vector<std::uint8_t> image(layer_bytes);
  for (std::uint32_t layer = 0; layer < shape_.layers; ++layer) {
    fill_prefill_layer(shape_, layer, image.data());
    KVF_RETURN_IF_ERROR(
        gpu_->memory.upload(layer * layer_bytes, image.data(), layer_bytes)
            .with_context("uploading layer " + std::to_string(layer) + " of the prefill pool"));
  }
  return Status::Ok();
#else
  (void)layer_bytes;
  return Internal("a demo pool without memory");
#endif
}

Status DemoPool::visit_layers(const std::function<bool(std::uint32_t, const std::uint8_t*)>& visit) {
  const std::uint64_t layer_bytes = std::uint64_t{shape_.blocks_per_layer} * shape_.block_size;
  if (host_) {
    for (std::uint32_t layer = 0; layer < shape_.layers; ++layer) {
      if (!visit(layer, host_->block(layer, 0))) break;
    }
    return Status::Ok();
  }
#ifdef KVFERRY_HAVE_CUDA
  std::vector<std::uint8_t> image(layer_bytes);
  for (std::uint32_t layer = 0; layer < shape_.layers; ++layer) {
    KVF_RETURN_IF_ERROR(
        gpu_->memory.download(layer * layer_bytes, image.data(), layer_bytes)
            .with_context("downloading layer " + std::to_string(layer) + " of the decode pool"));
    if (!visit(layer, image.data())) break;
  }
  return Status::Ok();
#else
  (void)layer_bytes;
  return Internal("a demo pool without memory");
#endif
}

}  // namespace kvferry::cli
