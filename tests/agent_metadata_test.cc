// Application entries and announced regions travel in the metadata.
#include <gtest/gtest.h>

#include "test_util.h"

namespace kvferry::testing {
namespace {

TEST(AgentMetadata, EntriesAndRegionsReachThePeer) {
  auto a = make_agent("a", "loopback");
  auto b = make_agent("b", "loopback");
  ASSERT_TRUE(a && b);
  Buffer x(8192), y(4096);
  KVF_ASSERT_OK(b->register_memory(x.whole()));
  KVF_ASSERT_OK(b->register_memory(y.whole()));
  std::vector<std::uint8_t> geometry{1, 2, 3, 4};
  KVF_ASSERT_OK(b->set_metadata_entry("kv.geometry", geometry));
  EXPECT_EQ(b->set_metadata_entry("has space", geometry).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(b->set_metadata_entry("big", std::vector<std::uint8_t>(65537)).code(), StatusCode::kInvalidArgument);
  introduce(*a, *b);

  auto entry = a->remote_metadata_entry("b", "kv.geometry");
  ASSERT_TRUE(entry.ok()) << entry.status().to_string();
  EXPECT_EQ(*entry, geometry);
  EXPECT_EQ(a->remote_metadata_entry("b", "missing").status().code(), StatusCode::kNotFound);
  auto own = b->remote_metadata_entry("b", "kv.geometry");  // an agent is its own peer
  ASSERT_TRUE(own.ok());

  auto regions = a->remote_regions("b");
  ASSERT_TRUE(regions.ok());
  ASSERT_EQ(regions->size(), 1u);  // one list per memory kind
  EXPECT_EQ((*regions)[0].kind(), MemoryKind::kDram);
  EXPECT_EQ((*regions)[0].size(), 2u);
  EXPECT_EQ((*regions)[0].total_bytes(), 8192u + 4096u);
  EXPECT_EQ(a->remote_regions("nobody").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvferry::testing
