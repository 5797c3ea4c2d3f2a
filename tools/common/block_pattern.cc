#include "common/block_pattern.h"

#include <cstring>

namespace kvferry::cli {
namespace {

std::uint64_t pattern_word(std::uint64_t key, std::uint64_t word_index) {
  return mix64(key ^ (word_index * 0xD6E8FEB86659FD93ull));
}

}  // namespace

void fill_pattern(void* block, std::size_t length, std::uint64_t key) {
  auto* bytes = static_cast<std::uint8_t*>(block);
  const std::size_t words = length / 8;
  for (std::size_t w = 0; w < words; ++w) {
    const std::uint64_t value = pattern_word(key, w);
    std::memcpy(bytes + w * 8, &value, 8);
  }
  if (length % 8 != 0) {
    const std::uint64_t tail = pattern_word(key, words);
    std::memcpy(bytes + words * 8, &tail, length % 8);
  }
}

std::optional<std::size_t> find_pattern_mismatch(const void* block, std::size_t length,
                                                 std::uint64_t key) {
  const auto* bytes = static_cast<const std::uint8_t*>(block);
  const std::size_t words = length / 8;
  for (std::size_t w = 0; w <= words; ++w) {
    const std::size_t width = w < words ? 8 : length % 8;
    if (width == 0) break;
    const std::uint64_t expected = pattern_word(key, w);
    if (std::memcmp(bytes + w * 8, &expected, width) == 0) continue;
    const auto* want = reinterpret_cast<const std::uint8_t*>(&expected);
    for (std::size_t b = 0; b < width; ++b) {
      if (bytes[w * 8 + b] != want[b]) return w * 8 + b;
    }
  }
  return std::nullopt;
}

std::optional<std::size_t> find_byte_mismatch(const void* block, std::size_t length,
                                              std::uint8_t expected) {
  const auto* bytes = static_cast<const std::uint8_t*>(block);
  const std::uint64_t expected_word = 0x0101010101010101ull * expected;
  std::size_t i = 0;
  for (; i + 8 <= length; i += 8) {  // word steps: poison checks scan whole pools
    std::uint64_t word;
    std::memcpy(&word, bytes + i, 8);
    if (word != expected_word) break;
  }
  for (; i < length; ++i) {
    if (bytes[i] != expected) return i;
  }
  return std::nullopt;
}

}  // namespace kvferry::cli
