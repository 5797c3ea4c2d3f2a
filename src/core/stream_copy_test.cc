// stream_copy against memcpy: every alignment of both sides, sizes around the 16-byte
// head, the 64-byte body and the tail; the bytes beside the destination untouched.
#include "core/stream_copy.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace kvferry::detail {
namespace {

TEST(StreamCopy, EqualsMemcpyForEveryAlignmentAndSize) {
  std::vector<std::uint8_t> source(8192 + 64);
  for (std::size_t i = 0; i < source.size(); ++i) source[i] = static_cast<std::uint8_t>(i * 131 + 7);
  for (std::size_t size : {0, 1, 15, 16, 17, 63, 64, 65, 127, 128, 200, 511, 512, 4097, 8192}) {
    for (std::size_t d_off = 0; d_off < 16; ++d_off) {
      for (std::size_t s_off : {0, 1, 8, 15}) {
        std::vector<std::uint8_t> got(size + 64, 0xA5), want(size + 64, 0xA5);
        stream_copy(got.data() + d_off, source.data() + s_off, size);
        stream_fence();
        std::memcpy(want.data() + d_off, source.data() + s_off, size);
        ASSERT_EQ(got, want) << "size " << size << " destination offset " << d_off << " source offset " << s_off;
      }
    }
  }
}

}  // namespace
}  // namespace kvferry::detail
