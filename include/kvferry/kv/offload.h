// kvferry/kv/offload.h — KV offload and onboard: blocks of a pool to a file store on
// local storage, and back into any blocks of a pool of the same geometry.
//
// Contract
// - A store is a directory: `kvstore.data` holds the blocks back to back (each block's
//   segments in the pool view's order), `kvstore.index` says which block is where, the
//   pool's geometry, the segment lengths and, optionally, an xxHash (XXH3-64) of every
//   block. The index is written last, to a temporary name, fsynced and renamed: a store
//   whose writer crashed (or is still writing) has no index and is reported as
//   incomplete, never read as valid. Overwriting a store first removes its index.
// - The agent moves the bytes: host pools through the `file` backend (io_uring,
//   O_DIRECT), GPU pools through `gds` (cuFile) or through staging (copies into pinned
//   host memory, then the file backend), see KvVramPath. The pool's memory must be
//   registered with the agent; the store registers and deregisters its data file itself.
// - Blocking: both calls block until the bytes are moved (and, for offload with `sync`,
//   durable), bounded by `timeout`. Thread-safe for distinct stores; two writers of one
//   store directory at once are not detected.
// - On any error of onboard, the destination blocks hold undefined bytes.
//
// The seam to a KV layout is KvPoolView: the segments (byte runs) that make up one block,
// and an opaque geometry string stored in the index and compared on onboard.
// `offload_view(const KvPool&)` builds it from kv_pool.h.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kvferry/agent.h"
#include "kvferry/kv/kv_pool.h"
#include "kvferry/memory.h"
#include "kvferry/status.h"

namespace kvferry {

struct KvPoolView {
  MemoryKind kind = MemoryKind::kDram;  // dram or vram
  std::uint32_t device = 0;             // the GPU of a vram pool
  std::uint32_t blocks = 0;             // block ids are [0, blocks)
  // Appends the segments of `block` to `out`: the same count and lengths for every block.
  std::function<void(std::uint32_t block, std::vector<Descriptor>& out)> segments;
  // Identifies what the bytes mean (model geometry, arrangement); compared verbatim.
  std::string geometry;
};

// A view of every layer of a KvPool: per block, its segments lane by lane (layer-major,
// K then V). Geometry: layers, KV heads, head dim, block tokens, dtype and arrangement
// (not the pool's size: a store onboards into a pool of any size).
KvPoolView offload_view(const KvPool& pool);

// How a GPU pool reaches the file. kAuto: the faster of the two as measured on the
// GPU machine (docs/benchmarks.md "Storage tier"), falling back to the other when that
// one is not available here.
enum class KvVramPath : std::uint8_t { kAuto, kGds, kStaging };

struct KvStoreOptions {
  // Offload: an XXH3-64 of every block, stored in the index and checked by onboard.
  // Hashed in host memory: host pools and the staging path; the gds path writes none.
  bool checksums = true;
  // Offload: replace an existing store (its index is removed first).
  bool overwrite = false;
  // Offload: fdatasync the data and fsync the index and directory before returning.
  bool sync = true;
  // Onboard: verify checksums when the store has them.
  bool verify = true;
  KvVramPath vram_path = KvVramPath::kAuto;
  // Staging buffer of the kStaging path (pinned host memory, two halves). 16 MiB moved
  // more than 64 MiB on the H200 machine (smaller steps overlap copies and I/O better).
  std::uint64_t staging_bytes = 16ull << 20;
  std::chrono::milliseconds timeout{120000};
};

struct KvStoreInfo {
  std::string directory;
  std::string geometry;
  std::vector<std::uint64_t> segment_bytes;  // one block's segments
  std::uint64_t block_bytes = 0;             // their sum
  std::vector<std::uint32_t> source_blocks;  // entry i held pool block source_blocks[i]
  bool checksums = false;
};

struct KvStoreResult {
  KvStoreInfo store;
  std::uint64_t bytes = 0;  // moved
  double seconds = 0;       // the whole call (index and sync included)
  double io_seconds = 0;    // the transfers alone
  std::string path;         // "file", "gds" or "staging"
  bool verified = false;    // onboard: every block matched its checksum
};

// Writes blocks `blocks` (ids of `pool`) to a new store in `directory` (created).
Result<KvStoreResult> offload_blocks(Agent& agent, const KvPoolView& pool,
                                     std::span<const std::uint32_t> blocks, const std::string& directory,
                                     const KvStoreOptions& options = {});

// Reads the store's entries `entries` (positions, all when empty) into `blocks` of `pool`
// (one block id per entry). The pool must have the store's geometry and segments.
Result<KvStoreResult> onboard_blocks(Agent& agent, const KvPoolView& pool, const std::string& directory,
                                     std::span<const std::uint32_t> blocks,
                                     std::span<const std::uint32_t> entries = {},
                                     const KvStoreOptions& options = {});

// Reads and validates a store's index (and the size of its data).
Result<KvStoreInfo> inspect_store(const std::string& directory);

}  // namespace kvferry
