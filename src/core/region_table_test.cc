#include "core/region_table.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace kvferry::detail {
namespace {

RegionInfo region(std::uint64_t id, std::uint64_t address, std::uint64_t length) {
  RegionInfo r;
  r.id = id;
  r.address = address;
  r.length = length;
  return r;
}

TEST(RegionTable, HoldingChecksBothEndsWithoutOverflow) {
  RegionTable<std::string> t;
  t.add(region(1, 0x1000, 0x1000), "a");
  t.add(region(2, 0x4000, 0x100), "b");
  ASSERT_NE(t.holding(0x1000, 0x1000), nullptr);
  EXPECT_EQ(t.holding(0x1800, 0x800)->value, "a");
  EXPECT_EQ(t.holding(0x2000, 0), t.holding(0x1000, 0x1000));  // the empty range at the end
  EXPECT_EQ(t.holding(0x1800, 0x801), nullptr);                // one byte past
  EXPECT_EQ(t.holding(0xfff, 1), nullptr);                     // before the first
  EXPECT_EQ(t.holding(0x3000, 0x10), nullptr);                 // between
  EXPECT_EQ(t.holding(0x4010, UINT64_MAX), nullptr);           // a length that wraps
  EXPECT_EQ(t.holding(UINT64_MAX, 1), nullptr);
  EXPECT_EQ(t.holding(0x4000, 0x100)->info.id, 2u);
}

TEST(RegionTable, AddFindEraseById) {
  RegionTable<> t;
  t.add(region(7, 0x1000, 0x10));
  t.add(region(8, 0x2000, 0x10));
  EXPECT_EQ(t.size(), 2u);
  ASSERT_NE(t.find(8), nullptr);
  EXPECT_EQ(t.find(8)->info.address, 0x2000u);
  EXPECT_TRUE(t.erase(7));
  EXPECT_FALSE(t.erase(7));
  EXPECT_EQ(t.find(7), nullptr);
  EXPECT_EQ(t.holding(0x1000, 1), nullptr);
  t.add(region(8, 0x3000, 0x10));  // the same id again replaces it
  EXPECT_EQ(t.size(), 1u);
  EXPECT_EQ(t.holding(0x2000, 1), nullptr);
  EXPECT_NE(t.holding(0x3000, 1), nullptr);
  int seen = 0;
  for (auto& [address, e] : t) seen += address == e.info.address;
  EXPECT_EQ(seen, 1);
}

}  // namespace
}  // namespace kvferry::detail
