// block_pattern.h — reproducible "random" block contents, and checks against them.
//
// Both sides of a transfer derive the same bytes from a 64-bit key, so the data never
// has to travel twice: the writer fills, the reader compares. Each 8-byte word is a
// 64-bit mix of (key, word index): no two blocks or offsets look alike, so a block
// landing in the wrong place or a shifted copy is caught.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

namespace kvferry::cli {

// splitmix64's finaliser: a cheap, well-spread 64-bit mix.
constexpr std::uint64_t mix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The key of one block's contents: which run (seed), which layer, which slot.
constexpr std::uint64_t pattern_key(std::uint64_t seed, std::uint64_t layer, std::uint64_t slot) {
  return mix64(mix64(seed ^ (layer << 40)) ^ slot);
}

void fill_pattern(void* block, std::size_t length, std::uint64_t key);

// Offset of the first byte that differs from the pattern, or nullopt when all match.
std::optional<std::size_t> find_pattern_mismatch(const void* block, std::size_t length,
                                                 std::uint64_t key);

// Offset of the first byte that is not `expected` (poison checks), or nullopt.
std::optional<std::size_t> find_byte_mismatch(const void* block, std::size_t length,
                                              std::uint8_t expected);

}  // namespace kvferry::cli
