// Agent metadata (core/metadata.h) from untrusted bytes: decode never crashes, and what
// it accepts survives an encode/decode round trip unchanged.
#include <xxhash.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/metadata.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kvferry::detail;
  // Odd first byte: the bytes as they are. Even: re-sealed (body length and checksum
  // made right), so that the record parser behind the checksum is reached.
  std::vector<std::uint8_t> blob(data, data + size);
  if (size > 21 && data[0] % 2 == 0) {
    blob.erase(blob.begin());
    const auto body = static_cast<std::uint32_t>(blob.size() - 20);
    const std::uint64_t sum = XXH3_64bits(blob.data() + 20, body);
    std::memcpy(blob.data(), "KVFM\x01\x00\x00\x00", 8);
    std::memcpy(blob.data() + 8, &body, 4);
    std::memcpy(blob.data() + 12, &sum, 8);
  }
  auto md = decode_metadata(blob);
  if (!md.ok()) return 0;
  auto again = decode_metadata(encode_metadata(*md));
  if (!again.ok() || again->name != md->name || again->instance != md->instance ||
      again->regions.size() != md->regions.size() || again->backends.size() != md->backends.size() ||
      again->entries != md->entries)
    std::abort();
  for (const auto& r : md->regions)
    if (r.length == 0 || r.address + r.length < r.address) std::abort();
  return 0;
}
