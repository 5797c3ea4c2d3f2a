// The index of an offload store (kvferry/kv/offload.h): its encoding, and reading and
// committing it in a store directory. Decoding takes untrusted bytes: bounds-checked,
// every field validated, and a trailing XXH3-64 of the rest; garbage is Corrupt.
// Format (little-endian): "KVFSTORE" | version u32 (=1) | flags u32 (bit 0: checksums) |
//   geometry length u32 + bytes | segment count u32 + lengths u64 x count |
//   block count u32 + source block ids u32 x count | [checksums u64 x count] | xxh3 u64
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvferry/kv/offload.h"

namespace kvferry::detail {

inline constexpr char kStoreIndexName[] = "kvstore.index";
inline constexpr char kStoreDataName[] = "kvstore.data";

struct StoreIndex {
  std::string geometry;
  std::vector<std::uint64_t> segment_bytes;
  std::vector<std::uint32_t> sources;
  std::vector<std::uint64_t> checksums;  // empty: none

  std::uint64_t block_bytes() const;
  KvStoreInfo info(const std::string& directory) const;
};

std::vector<std::uint8_t> encode_store_index(const StoreIndex& index);
Result<StoreIndex> decode_store_index(const std::vector<std::uint8_t>& bytes);

// Reads `directory`'s index: NotFound when there is no store, FailedPrecondition when
// its data exists without a committed index (an unfinished or crashed writer), Corrupt
// when the index is damaged or the data is shorter than the index says.
Result<StoreIndex> read_store_index(const std::string& directory);
// Writes the index under a temporary name, fsyncs it (with `sync`), renames it into
// place and fsyncs the directory: after return the store is committed.
Status commit_store_index(const std::string& directory, const StoreIndex& index, bool sync);
// Removes a committed index durably (before a store is overwritten).
Status retract_store_index(const std::string& directory);

}  // namespace kvferry::detail
