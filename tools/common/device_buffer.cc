#ifdef KVFERRY_HAVE_CUDA
#include "common/device_buffer.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace kvferry::cli {
namespace {

// Bounds the pinned memory a gather holds; large enough that the per-batch
// synchronisation is noise next to the copies.
constexpr std::uint64_t kStagingBytes = std::uint64_t{64} << 20;

Status cuda_status(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return Status::Ok();
  cudaGetLastError();
  return IoError(what + ": " + cudaGetErrorString(e));
}

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

}  // namespace

Result<DeviceBuffer> DeviceBuffer::allocate(int device, std::uint64_t bytes) {
  if (bytes == 0) return InvalidArgument("a GPU buffer needs at least one byte");
  KVF_RETURN_IF_ERROR(cuda_status(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")"));
  void* base = nullptr;
  KVF_RETURN_IF_ERROR(cuda_status(cudaMalloc(&base, bytes), "cudaMalloc of " + std::to_string(bytes) +
                                                                " bytes on GPU " + std::to_string(device)));
  cudaStream_t stream = nullptr;
  if (Status s = cuda_status(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
      !s.ok()) {
    cudaFree(base);
    return s;
  }
  return DeviceBuffer(device, base, bytes, stream);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : device_(other.device_),
      base_(other.base_),
      bytes_(other.bytes_),
      stream_(other.stream_),
      staging_(other.staging_) {
  other.base_ = nullptr;
  other.stream_ = nullptr;
  other.staging_ = nullptr;
}

DeviceBuffer::~DeviceBuffer() {
  if (base_ == nullptr && stream_ == nullptr && staging_ == nullptr) return;
  cudaSetDevice(device_);
  if (stream_ != nullptr) cudaStreamDestroy(as_stream(stream_));
  if (staging_ != nullptr) cudaFreeHost(staging_);
  if (base_ != nullptr) cudaFree(base_);
}

Status DeviceBuffer::check_range(std::uint64_t offset, std::uint64_t length) const {
  if (offset > bytes_ || length > bytes_ - offset) {
    return OutOfRange("GPU buffer range [" + std::to_string(offset) + ", +" + std::to_string(length) +
                      ") is outside its " + std::to_string(bytes_) + " bytes");
  }
  return Status::Ok();
}

Status DeviceBuffer::use_device() const {
  return cuda_status(cudaSetDevice(device_), "cudaSetDevice(" + std::to_string(device_) + ")");
}

Status DeviceBuffer::upload(std::uint64_t offset, const void* host, std::uint64_t length) {
  KVF_RETURN_IF_ERROR(check_range(offset, length));
  KVF_RETURN_IF_ERROR(use_device());
  return cuda_status(cudaMemcpy(base_ + offset, host, length, cudaMemcpyHostToDevice),
                     "uploading to the GPU");
}

Status DeviceBuffer::download(std::uint64_t offset, void* host, std::uint64_t length) {
  KVF_RETURN_IF_ERROR(check_range(offset, length));
  KVF_RETURN_IF_ERROR(use_device());
  return cuda_status(cudaMemcpy(host, base_ + offset, length, cudaMemcpyDeviceToHost),
                     "downloading from the GPU");
}

Status DeviceBuffer::fill(std::span<const ByteRange> ranges, std::uint8_t byte) {
  for (const ByteRange& r : ranges) KVF_RETURN_IF_ERROR(check_range(r.offset, r.length));
  KVF_RETURN_IF_ERROR(use_device());
  for (const ByteRange& r : ranges) {
    KVF_RETURN_IF_ERROR(cuda_status(cudaMemsetAsync(base_ + r.offset, byte, r.length, as_stream(stream_)),
                                    "cudaMemsetAsync"));
  }
  return cuda_status(cudaStreamSynchronize(as_stream(stream_)), "filling GPU ranges");
}

Status DeviceBuffer::gather(std::span<const ByteRange> ranges, std::uint8_t* host) {
  for (const ByteRange& r : ranges) KVF_RETURN_IF_ERROR(check_range(r.offset, r.length));
  KVF_RETURN_IF_ERROR(use_device());
  if (staging_ == nullptr) {
    void* pinned = nullptr;
    KVF_RETURN_IF_ERROR(
        cuda_status(cudaMallocHost(&pinned, kStagingBytes), "cudaMallocHost of the staging area"));
    staging_ = static_cast<std::uint8_t*>(pinned);
  }
  std::size_t next = 0;           // the range being copied
  std::uint64_t into_range = 0;   // bytes of it already staged
  while (next < ranges.size()) {  // one batch: fill the staging area, wait, unload it
    std::uint64_t staged = 0;
    while (next < ranges.size() && staged < kStagingBytes) {
      const ByteRange& r = ranges[next];
      const std::uint64_t n = std::min(r.length - into_range, kStagingBytes - staged);
      KVF_RETURN_IF_ERROR(cuda_status(cudaMemcpyAsync(staging_ + staged, base_ + r.offset + into_range, n,
                                                      cudaMemcpyDeviceToHost, as_stream(stream_)),
                                      "cudaMemcpyAsync from the GPU"));
      staged += n;
      into_range += n;
      if (into_range == r.length) {
        ++next;
        into_range = 0;
      }
    }
    KVF_RETURN_IF_ERROR(cuda_status(cudaStreamSynchronize(as_stream(stream_)), "gathering GPU ranges"));
    std::memcpy(host, staging_, staged);
    host += staged;
  }
  return Status::Ok();
}

}  // namespace kvferry::cli
#endif  // KVFERRY_HAVE_CUDA
