#include "backends/ucx/ucx_wire.h"

#include "core/byte_io.h"

namespace kvferry::detail::ucx {

std::vector<std::uint8_t> encode_info(const ConnectionInfo& info) {
  ByteWriter w;
  w.u32(kInfoMagic);
  w.u16(kInfoVersion);
  w.u16(info.flags);
  w.u32(static_cast<std::uint32_t>(info.address.size()));
  w.bytes(info.address);
  return w.take();
}

Result<ConnectionInfo> decode_info(std::span<const std::uint8_t> bytes) {
  ByteReader r(bytes);
  ConnectionInfo info;
  if (r.u32() != kInfoMagic || !r.ok()) return Corrupt("ucx: connection info is not a ucx backend's");
  const std::uint16_t version = r.u16();
  if (version != kInfoVersion)
    return Corrupt("ucx: connection info version " + std::to_string(version) + ", this build reads " +
                   std::to_string(kInfoVersion));
  info.flags = r.u16();
  const std::uint32_t alen = r.u32();
  if (!r.ok() || alen == 0 || alen > kMaxAddressBytes) return Corrupt("ucx: bad worker address length");
  auto a = r.take(alen);
  info.address.assign(a.begin(), a.end());
  if (!r.ok() || r.remaining() != 0) return Corrupt("ucx: connection info has trailing or missing bytes");
  return info;
}

void encode_region_keys(ByteWriter& w, const std::vector<RegionKey>& keys) {
  w.u32(static_cast<std::uint32_t>(keys.size()));
  for (const auto& k : keys) {
    w.u64(k.id);
    w.u64(k.address);
    w.u64(k.length);
    w.u32(static_cast<std::uint32_t>(k.rkey.size()));
    w.bytes(k.rkey);
  }
}

Result<std::vector<RegionKey>> decode_region_keys(ByteReader& r) {
  const std::uint32_t n = r.u32();
  if (!r.ok() || n > kMaxInfoRegions) return Corrupt("ucx: bad region count in a hello answer");
  std::vector<RegionKey> keys;
  keys.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    RegionKey k;
    k.id = r.u64();
    k.address = r.u64();
    k.length = r.u64();
    const std::uint32_t klen = r.u32();
    if (!r.ok() || klen == 0 || klen > kMaxRkeyBytes) return Corrupt("ucx: bad remote key length");
    if (k.length == 0 || k.address + k.length < k.address) return Corrupt("ucx: bad region bounds");
    auto kb = r.take(klen);
    if (!r.ok()) return Corrupt("ucx: truncated hello answer");
    k.rkey.assign(kb.begin(), kb.end());
    keys.push_back(std::move(k));
  }
  if (r.remaining() != 0) return Corrupt("ucx: a hello answer has trailing bytes");
  return keys;
}

}  // namespace kvferry::detail::ucx
