// An offload store's index file (kv/offload_index.h) read from disk: decode never
// crashes, and what it accepts round-trips unchanged.
#include <xxhash.h>

#include <cstdlib>
#include <cstring>

#include "kv/offload_index.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kvferry::detail;
  // Even first byte: the trailing checksum is made right, to reach the field checks.
  std::vector<std::uint8_t> bytes(data, data + size);
  if (size > 9 && data[0] % 2 == 0) {
    bytes.erase(bytes.begin());
    const std::uint64_t sum = XXH3_64bits(bytes.data(), bytes.size() - 8);
    std::memcpy(bytes.data() + bytes.size() - 8, &sum, 8);
  }
  auto index = decode_store_index(bytes);
  if (!index.ok()) return 0;
  auto again = decode_store_index(encode_store_index(*index));
  if (!again.ok() || again->geometry != index->geometry || again->segment_bytes != index->segment_bytes ||
      again->sources != index->sources || again->checksums != index->checksums)
    std::abort();
  return 0;
}
