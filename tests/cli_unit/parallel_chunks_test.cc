// parallel_chunks: every index of [0, total) in exactly one chunk, whatever the total
// (a request of one block once left its whole reference image unwritten).
#include "common/parallel_chunks.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <memory>

namespace kvferry::cli {
namespace {

TEST(ParallelChunks, EveryIndexExactlyOnce) {
  for (std::uint64_t total : {0ull, 1ull, 2ull, 15ull, 16ull, 17ull, 4095ull, 4097ull, 65544ull, 16ull * 4096 + 8}) {
    for (unsigned threads : {1u, 2u, 16u}) {
      SCOPED_TRACE(std::to_string(total) + " elements, " + std::to_string(threads) + " threads");
      auto hits = std::make_unique<std::atomic<int>[]>(total + 1);
      parallel_chunks(
          total,
          [&](std::uint64_t b, std::uint64_t e) {
            EXPECT_EQ(b % 4096, 0u);
            for (std::uint64_t i = b; i < e; ++i) hits[i].fetch_add(1);
          },
          threads);
      std::uint64_t wrong = 0;
      for (std::uint64_t i = 0; i < total; ++i) wrong += hits[i].load() != 1;
      EXPECT_EQ(wrong, 0u);
    }
  }
}

}  // namespace
}  // namespace kvferry::cli
