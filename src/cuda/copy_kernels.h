// Copy kernels: one launch moves a batch of scattered (source, destination, length)
// items on the GPU (gather, scatter, or peer copies through CUDA IPC mappings), so that
// thousands of small blocks cost one launch instead of one copy call each.
//
// Plain C++ header (no CUDA types leak out): streams are passed as void*.
// Threading: the functions are stateless; concurrent calls on different streams are fine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvferry::detail::cuda {

// One unit of work of the copy kernel: `length` bytes from `src` to `dst`, both
// addresses the launching device can reach (its own memory, a peer's through IPC or
// peer access, mapped pinned host memory).
struct CopyItem {
  std::uint64_t src = 0;
  std::uint64_t dst = 0;
  std::uint64_t length = 0;
};

// Largest item: longer pairs are cut so that the blocks of the grid share the work
// evenly (a single 1 GiB pair must not run on one thread block).
inline constexpr std::uint64_t kMaxItemBytes = 256u << 10;

// Appends the items of one pair, cut at kMaxItemBytes.
inline void append_items(std::vector<CopyItem>* out, std::uint64_t src, std::uint64_t dst, std::uint64_t length) {
  for (std::uint64_t off = 0; off < length; off += kMaxItemBytes) {
    const std::uint64_t n = length - off < kMaxItemBytes ? length - off : kMaxItemBytes;
    out->push_back(CopyItem{src + off, dst + off, n});
  }
}

// Launches the copy kernel on `stream` (a cudaStream_t of the current device) over
// `count` items that lie in device memory at `device_items`. Returns the launch's
// cudaError_t as an int (0 = success). `blocks` bounds the grid (0: 4 per SM).
int launch_copy_items(const CopyItem* device_items, std::uint32_t count, void* stream, std::uint32_t blocks);

// Launches the strided copy kernel: for every lane l < `lanes` and chunk c < `chunks`,
// chunks[c].length bytes from src_lanes[l] + chunks[c].src to dst_lanes[l] + chunks[c].dst
// (a chunk's addresses are offsets from its lane's bases). The three arrays lie in device
// memory. One launch moves lanes x chunks items whose table the host never expanded.
int launch_copy_strided(const std::uint64_t* device_src_lanes, const std::uint64_t* device_dst_lanes,
                        const CopyItem* device_chunks, std::uint32_t lanes, std::uint32_t chunks, void* stream,
                        std::uint32_t blocks);

// The number of streaming multiprocessors of `device` (0 if unknown).
std::uint32_t multiprocessor_count(int device);

// For tests and tools: copies `items` on `device` with the kernel and waits. Empty
// string on success, else what failed.
std::string copy_items_sync(int device, const std::vector<CopyItem>& items);

}  // namespace kvferry::detail::cuda
