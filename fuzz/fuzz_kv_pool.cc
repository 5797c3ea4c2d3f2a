// The "kv.pool" metadata entry (kvferry/kv/kv_pool.h) a peer publishes: decode never
// crashes, and what it accepts encodes back to a blob that decodes the same.
#include <cstdlib>

#include "kvferry/kv/kv_pool.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto pool = kvferry::KvPool::decode({data, size});
  if (!pool.ok()) return 0;
  auto blob = pool->encode();
  auto again = kvferry::KvPool::decode(blob);
  if (!again.ok() || again->encode() != blob) std::abort();
  return 0;
}
