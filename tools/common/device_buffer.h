// device_buffer.h — GPU memory for the tools' `--mem vram` pools: one cudaMalloc on a
// chosen GPU, freed on destruction, and the copies the tools need around it: upload a
// host image, poison many small ranges, gather many small ranges back to the host.
// A pool's step touches one range per (lane, block), tens of thousands of them; those
// go on the buffer's own non-blocking stream with one synchronisation per batch,
// through a pinned staging area, so poisoning or checking a step costs milliseconds
// rather than a round trip per range (and never waits on another stream's work).
// Not thread-safe: one owner. Only in builds with CUDA (KVFERRY_HAVE_CUDA).
#pragma once

#ifdef KVFERRY_HAVE_CUDA
#include <cstdint>
#include <span>

#include "kvferry/kvferry.h"

namespace kvferry::cli {

struct ByteRange {
  std::uint64_t offset = 0;  // from the start of the buffer
  std::uint64_t length = 0;
};

class DeviceBuffer {
 public:
  // `bytes` of uninitialised memory on GPU `device`.
  static Result<DeviceBuffer> allocate(int device, std::uint64_t bytes);

  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&&) = delete;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  int device() const { return device_; }
  std::uint64_t address() const { return reinterpret_cast<std::uint64_t>(base_); }
  std::uint64_t size() const { return bytes_; }

  // Each returns once the bytes have landed (the GPU work is synchronised).
  Status upload(std::uint64_t offset, const void* host, std::uint64_t length);
  Status download(std::uint64_t offset, void* host, std::uint64_t length);
  Status fill(std::span<const ByteRange> ranges, std::uint8_t byte);
  // The ranges' bytes back to back into `host` (the sum of their lengths).
  Status gather(std::span<const ByteRange> ranges, std::uint8_t* host);

 private:
  DeviceBuffer(int device, void* base, std::uint64_t bytes, void* stream)
      : device_(device), base_(static_cast<std::uint8_t*>(base)), bytes_(bytes), stream_(stream) {}
  Status check_range(std::uint64_t offset, std::uint64_t length) const;
  Status use_device() const;

  int device_ = 0;
  std::uint8_t* base_ = nullptr;
  std::uint64_t bytes_ = 0;
  void* stream_ = nullptr;           // cudaStream_t, kept opaque so this header needs no CUDA headers
  std::uint8_t* staging_ = nullptr;  // pinned, allocated by the first gather
};

}  // namespace kvferry::cli
#endif  // KVFERRY_HAVE_CUDA
