#include "core/memory_registry.h"

#include <gtest/gtest.h>

namespace kvferry::detail {
namespace {

DescriptorList list(std::initializer_list<Descriptor> d) { return DescriptorList(MemoryKind::kDram, d); }

TEST(MemoryRegistry, AddFindPinRemove) {
  MemoryRegistry reg;
  auto planned = reg.plan_add(list({{0x1000, 0x1000, 0}, {0x4000, 0x2000, 0}}));
  ASSERT_TRUE(planned.ok());
  reg.commit_add(*planned);
  EXPECT_TRUE(reg.find(MemoryKind::kDram, {0x1800, 0x800, 0}).ok());
  EXPECT_FALSE(reg.find(MemoryKind::kDram, {0x1800, 0x801, 0}).ok());
  EXPECT_FALSE(reg.find(MemoryKind::kDram, {0x3000, 0x10, 0}).ok());
  EXPECT_FALSE(reg.find(MemoryKind::kVram, {0x1800, 0x10, 0}).ok());
  std::vector<std::uint64_t> ids{(*planned)[0].id};
  ASSERT_TRUE(reg.pin(ids).ok());
  auto busy = reg.remove(list({{0x1000, 0x1000, 0}}));
  EXPECT_EQ(busy.status().code(), StatusCode::kFailedPrecondition);
  reg.unpin(ids);
  EXPECT_TRUE(reg.remove(list({{0x1000, 0x1000, 0}})).ok());
  EXPECT_FALSE(reg.pin(ids).ok());
}

TEST(MemoryRegistry, OverlapsAreRefused) {
  MemoryRegistry reg;
  reg.commit_add(*reg.plan_add(list({{0x10000, 0x1000, 0}})));
  EXPECT_EQ(reg.plan_add(list({{0x10800, 0x1000, 0}})).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(reg.plan_add(list({{0xF800, 0x1000, 0}})).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(reg.plan_add(list({{0x10000, 0x10, 0}})).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(reg.plan_add(list({{0x20000, 0x1000, 0}, {0x20800, 0x10, 0}})).status().code(),
            StatusCode::kAlreadyExists);
  EXPECT_TRUE(reg.plan_add(list({{0x11000, 0x1000, 0}})).ok());  // adjacent is fine
  EXPECT_EQ(reg.plan_add(list({{0x30000, 0, 0}})).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvferry::detail
