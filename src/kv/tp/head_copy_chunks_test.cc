#include "kv/tp/head_copy_chunks.h"

#include <gtest/gtest.h>

namespace kvferry::detail {
namespace {

HeadCopyPlan plan(std::uint32_t heads, std::uint32_t layers, std::uint64_t tokens) {
  HeadCopyPlan p;
  p.row_bytes = 256;
  p.tokens = tokens;
  p.layers = layers;
  p.kv_parts = 2;
  p.heads = heads;
  p.head_first = 4;
  p.tensors_per_layer = 2;
  return p;
}

// The pieces tile the staging in order, one head each, within the piece size, and each
// piece's own staging (its plan) is exactly its byte range of the whole.
TEST(HeadCopyChunks, PiecesTileTheStagingInOrder) {
  for (std::uint64_t piece : {2ull * 2 * 100 * 256, 7ull * 2 * 100 * 256 + 5, 1ull << 30}) {
    const HeadCopyPlan whole = plan(3, 40, 100);
    const auto chunks = head_copy_chunks(whole, piece);
    ASSERT_FALSE(chunks.empty());
    std::uint64_t next = 0;
    for (const HeadCopyChunk& c : chunks) {
      EXPECT_EQ(c.offset, next);
      EXPECT_LE(c.bytes, piece);
      EXPECT_EQ(c.plan.heads, 1u);
      EXPECT_EQ(c.bytes, c.plan.rows() * c.plan.row_bytes);
      const std::uint32_t h = c.plan.head_first - whole.head_first;
      EXPECT_EQ(c.offset, whole.staging_row(h, c.plan.layer_first, 0, 0));
      EXPECT_EQ(c.plan.tensor_index(0, 1), whole.tensor_index(c.plan.layer_first, 1));
      next += c.bytes;
    }
    EXPECT_EQ(next, whole.rows() * whole.row_bytes);
  }
  EXPECT_EQ(head_copy_chunks(plan(3, 40, 100), 1ull << 30).size(), 3u);  // one piece per head
}

TEST(HeadCopyChunks, NoPiecesWhenOneLayerDoesNotFit) {
  EXPECT_TRUE(head_copy_chunks(plan(1, 4, 100), 2 * 100 * 256 - 1).empty());
  EXPECT_EQ(head_copy_chunks(plan(1, 4, 100), 2 * 100 * 256).size(), 4u);
}

}  // namespace
}  // namespace kvferry::detail
