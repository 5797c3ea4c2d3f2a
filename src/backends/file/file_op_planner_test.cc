#include "backends/file/file_op_planner.h"

#include <gtest/gtest.h>

namespace kvferry::detail {
namespace {

constexpr std::uint64_t kBase = 1ull << 30;  // an aligned "address"; nothing is dereferenced

class Planner : public ::testing::Test {
 protected:
  Planner() {
    file_.file_id = 7;
    file_.fd = 3;
    file_.direct_fd = 4;
    file_.alignment = 4096;
    file_.path = "f";
  }
  std::vector<IoOp> plan(const std::vector<TransferPiece>& pieces, std::uint64_t max_bytes,
                         bool direct = true) {
    FileOpPlanner p(&pieces, true, max_bytes, direct);
    auto lookup = [&](std::uint32_t id) -> Result<const FileTarget*> {
      if (id != 7) return NotFound("no file " + std::to_string(id));
      return &file_;
    };
    std::vector<IoOp> ops;
    while (!p.done()) {
      ops.emplace_back();
      EXPECT_TRUE(p.next(ops.back(), lookup).ok());
    }
    return ops;
  }
  static TransferPiece piece(std::uint64_t mem, std::uint64_t off, std::uint64_t len) {
    return TransferPiece{kBase + mem, off, len, 0, 7};
  }
  FileTarget file_;
};

TEST_F(Planner, ScatteredMemoryContiguousFileGathersUpToMaxBytes) {
  std::vector<TransferPiece> pieces;
  for (std::uint64_t i = 0; i < 40; ++i) pieces.push_back(piece((i * 7 % 40) << 16, i << 16, 1 << 16));
  auto ops = plan(pieces, 1 << 20);
  ASSERT_EQ(ops.size(), 3u);  // 16 + 16 + 8 blocks of 64 KiB
  EXPECT_EQ(ops[0].count, 16u);
  EXPECT_EQ(ops[0].bytes, 1u << 20);
  EXPECT_TRUE(ops[0].direct);
  EXPECT_EQ(ops[1].offset, 1u << 20);
  EXPECT_EQ(ops[2].count, 8u);
}

TEST_F(Planner, LargePiecesSplitAndGapsInTheFileCutOps) {
  auto ops = plan({piece(0, 0, 3 << 20), piece(3 << 20, (3 << 20) + 4096, 4096)}, 1 << 20);
  ASSERT_EQ(ops.size(), 4u);
  EXPECT_EQ(ops[2].offset, 2u << 20);
  EXPECT_EQ(ops[3].offset, (3u << 20) + 4096);
}

TEST_F(Planner, UnalignedTailsAndPiecesGoThroughThePageCache) {
  // Aligned head of 8 KiB + 100-byte tail; then an unaligned piece; then aligned again.
  auto ops = plan({piece(0, 0, 8192 + 100), piece(65536 + 3, 8192 + 100, 500), piece(1 << 20, 1 << 20, 4096)},
                  1 << 20);
  ASSERT_EQ(ops.size(), 3u);
  EXPECT_TRUE(ops[0].direct);
  EXPECT_EQ(ops[0].bytes, 8192u);
  EXPECT_FALSE(ops[1].direct);  // tail + the unaligned piece, contiguous in the file
  EXPECT_EQ(ops[1].count, 2u);
  EXPECT_EQ(ops[1].bytes, 600u);
  EXPECT_TRUE(ops[2].direct);
  // Without O_DIRECT everything is buffered and gathered as far as the file allows.
  ops = plan({piece(0, 0, 8192 + 100), piece(65536 + 3, 8192 + 100, 500)}, 1 << 20, false);
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_FALSE(ops[0].direct);
}

TEST_F(Planner, ShortCompletionAdvancesAndLosesDirectWhenUnaligned) {
  auto ops = plan({piece(0, 0, 8192), piece(65536, 8192, 8192)}, 1 << 20);
  ASSERT_EQ(ops.size(), 1u);
  IoOp op = ops[0];
  ASSERT_TRUE(op.advance(4096));
  EXPECT_TRUE(op.direct);
  EXPECT_EQ(op.offset, 4096u);
  EXPECT_EQ(op.bytes, 12288u);
  ASSERT_TRUE(op.advance(4096 + 10));
  EXPECT_EQ(op.first, 1u);
  EXPECT_FALSE(op.direct);
  EXPECT_FALSE(op.advance(8192 - 10));
}

TEST_F(Planner, UnknownFileIsAnError) {
  std::vector<TransferPiece> pieces = {TransferPiece{kBase, 0, 4096, 0, 9}};
  FileOpPlanner p(&pieces, false, 1 << 20, true);
  IoOp op;
  auto s = p.next(op, [](std::uint32_t) -> Result<const FileTarget*> { return NotFound("gone"); });
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvferry::detail
