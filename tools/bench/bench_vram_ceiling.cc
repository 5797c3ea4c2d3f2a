// The ceilings of `kvferry bench --mem vram` (bench_vram.h): what the same bytes cost
// on the plain path of each backend, measured in the same run.
#ifdef KVFERRY_HAVE_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "bench/bench_vram.h"
#include "common/socket_util.h"

namespace kvferry::cli {
namespace {
using Clock = std::chrono::steady_clock;
constexpr std::uint64_t kStreamChunk = 4u << 20;
constexpr std::uint64_t kPinnedChunk = 256u << 20;

// Moves `bytes` over `fd` in kStreamChunk calls from/into one reused buffer.
Status stream_bytes(int fd, std::uint64_t bytes, bool send) {
  std::vector<std::uint8_t> buf(kStreamChunk, 0x5A);
  for (std::uint64_t done = 0; done < bytes;) {
    const std::size_t n = static_cast<std::size_t>(std::min(kStreamChunk, bytes - done));
    KVF_RETURN_IF_ERROR(send ? send_all(fd, buf.data(), n) : recv_all(fd, buf.data(), n));
    done += n;
  }
  return Status::Ok();
}
}  // namespace

double peer_copy_ceiling(int src_dev, const void* src, int dst_dev, void* dst, std::uint64_t bytes, int reps) {
  cudaSetDevice(src_dev);
  if (src_dev != dst_dev && cudaDeviceEnablePeerAccess(dst_dev, 0) != cudaSuccess) cudaGetLastError();  // direct P2P
  cudaStream_t s;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  double best = 0;
  for (int r = 0; r < reps + 1; ++r) {
    const auto t0 = Clock::now();
    cudaMemcpyPeerAsync(dst, dst_dev, src, src_dev, bytes, s);
    cudaStreamSynchronize(s);
    const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    if (r > 0) best = std::max(best, static_cast<double>(bytes) / sec / 1e9);  // first: warm-up
  }
  cudaStreamDestroy(s);
  return best;
}

double pinned_copy_ceiling(int device, void* vram, std::uint64_t bytes, bool device_to_host, int reps) {
  cudaSetDevice(device);
  void* pinned = nullptr;
  const std::uint64_t chunk = std::min(bytes, kPinnedChunk);
  if (cudaHostAlloc(&pinned, chunk, cudaHostAllocPortable) != cudaSuccess) return 0;
  cudaStream_t s;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  double best = 0;
  for (int r = 0; r < reps + 1; ++r) {
    const auto t0 = Clock::now();
    for (std::uint64_t off = 0; off < bytes; off += chunk) {
      const std::uint64_t n = std::min(chunk, bytes - off);
      auto* dev = static_cast<std::uint8_t*>(vram) + off;
      if (device_to_host) cudaMemcpyAsync(pinned, dev, n, cudaMemcpyDeviceToHost, s);
      else cudaMemcpyAsync(dev, pinned, n, cudaMemcpyHostToDevice, s);
    }
    cudaStreamSynchronize(s);
    const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    if (r > 0) best = std::max(best, static_cast<double>(bytes) / sec / 1e9);
  }
  cudaStreamDestroy(s);
  cudaFreeHost(pinned);
  return best;
}

Result<double> socket_stream_ceiling(Agent& a, std::uint64_t bytes, bool we_send, int reps) {
  KVF_ASSIGN_OR_RETURN(Listener l, listen_tcp("127.0.0.1", 0));
  double best = 0;
  for (int r = 0; r < reps + 1; ++r) {
    const std::string msg = std::string(we_send ? "sink " : "source ") + std::to_string(l.port) + " " +
                            std::to_string(bytes);
    KVF_RETURN_IF_ERROR(a.notify("vram-target", msg));
    const auto deadline = Clock::now() + kIoTimeout;
    KVF_ASSIGN_OR_RETURN(FileDescriptor fd, accept_connection(l.socket.get(), std::chrono::milliseconds(200),
                                                              [&] { return Clock::now() < deadline; }));
    KVF_RETURN_IF_ERROR(configure_stream_socket(fd.get()));
    const auto t0 = Clock::now();
    KVF_RETURN_IF_ERROR(stream_bytes(fd.get(), bytes, we_send));
    if (we_send) {  // the receiver acks the last byte
      std::uint8_t ack = 0;
      KVF_RETURN_IF_ERROR(recv_all(fd.get(), &ack, 1));
    }
    const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    if (r > 0) best = std::max(best, static_cast<double>(bytes) / sec / 1e9);
    if (std::string done = await_vram_target(a); done != "streamed")
      return RemoteError("vram target, plain stream: " + done);
  }
  return best;
}

Status serve_socket_stream(std::uint16_t port, std::uint64_t bytes, bool we_send) {
  KVF_ASSIGN_OR_RETURN(FileDescriptor fd, connect_tcp("127.0.0.1", port, std::chrono::milliseconds(5000)));
  KVF_RETURN_IF_ERROR(configure_stream_socket(fd.get()));
  KVF_RETURN_IF_ERROR(stream_bytes(fd.get(), bytes, we_send));
  if (!we_send) {
    const std::uint8_t ack = 1;
    KVF_RETURN_IF_ERROR(send_all(fd.get(), &ack, 1));
  }
  return Status::Ok();
}

}  // namespace kvferry::cli
#endif  // KVFERRY_HAVE_CUDA
