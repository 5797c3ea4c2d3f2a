#include "core/metadata.h"

#include <xxhash.h>

#include <string>

#include "core/byte_io.h"

namespace kvferry::detail {
namespace {

constexpr char kMagic[4] = {'K', 'V', 'F', 'M'};
constexpr std::size_t kHeaderBytes = 4 + 2 + 2 + 4 + 8;
constexpr std::size_t kMaxIdBytes = 255;

enum Tag : std::uint16_t {
  kTagName = 1,
  kTagHostId = 2,
  kTagProcessId = 3,
  kTagBackend = 4,
  kTagRegion = 5,
  kTagSideChannel = 6,
  kTagEntry = 7,
  kTagInstance = 8,
  kTagRevision = 9,
  kTagRegionName = 10,
};

void put_record(ByteWriter& w, Tag tag, const ByteWriter& value) {
  w.u16(tag);
  w.u32(static_cast<std::uint32_t>(value.size()));
  w.raw(const_cast<ByteWriter&>(value).buffer().data(), value.size());
}

void put_string_record(ByteWriter& w, Tag tag, std::string_view s) {
  ByteWriter v;
  v.str(s);
  put_record(w, tag, v);
}

Status parse_region(std::span<const std::uint8_t> value, AgentMetadata& md) {
  ByteReader r(value);
  RegionInfo region;
  region.id = r.u64();
  std::uint8_t kind = r.u8();
  region.device = r.u32();
  region.address = r.u64();
  region.length = r.u64();
  if (!r.ok()) return Corrupt("metadata: truncated region record");
  if (kind >= kMemoryKindCount) return Status::Ok();  // a kind from a newer peer: skip
  region.kind = static_cast<MemoryKind>(kind);
  if (region.length == 0) return Corrupt("metadata: region of zero length");
  if (region.address + region.length < region.address)
    return Corrupt("metadata: region wraps around the address space");
  if (md.regions.size() >= kMaxRegions) return Corrupt("metadata: too many regions");
  md.regions.push_back(region);
  return Status::Ok();
}

Status parse_backend(std::span<const std::uint8_t> value, AgentMetadata& md) {
  ByteReader r(value);
  std::uint16_t name_len = r.u16();
  if (!r.ok() || name_len == 0 || name_len > 64) return Corrupt("metadata: bad backend name length");
  BackendEntry entry;
  entry.name = r.str(name_len);
  if (!r.ok()) return Corrupt("metadata: truncated backend record");
  if (r.remaining() > kMaxBackendInfoBytes) return Corrupt("metadata: backend info too large");
  auto info = r.take(r.remaining());
  entry.info.assign(info.begin(), info.end());
  if (md.backends.size() >= kMaxBackends) return Corrupt("metadata: too many backends");
  md.backends.push_back(std::move(entry));
  return Status::Ok();
}

Status parse_side_channel(std::span<const std::uint8_t> value, AgentMetadata& md) {
  ByteReader r(value);
  SideChannelAddress addr;
  addr.port = r.u16();
  if (!r.ok() || r.remaining() == 0 || r.remaining() > kMaxIdBytes)
    return Corrupt("metadata: bad side-channel record");
  addr.host = r.str(r.remaining());
  md.side_channel = std::move(addr);
  return Status::Ok();
}

Status parse_entry(std::span<const std::uint8_t> value, AgentMetadata& md) {
  ByteReader r(value);
  std::uint16_t key_len = r.u16();
  std::string key = r.str(key_len);
  if (!r.ok() || !validate_entry_key(key).ok()) return Corrupt("metadata: bad application entry key");
  if (r.remaining() > kMaxEntryValueBytes) return Corrupt("metadata: application entry too large");
  if (md.entries.size() >= kMaxEntries && !md.entries.count(key)) return Corrupt("metadata: too many entries");
  auto v = r.take(r.remaining());
  md.entries[key].assign(v.begin(), v.end());
  return Status::Ok();
}

Status parse_revision(std::span<const std::uint8_t> value, AgentMetadata& md) {
  ByteReader r(value);
  md.revision = r.u64();
  if (!r.ok()) return Corrupt("metadata: truncated revision record");
  return Status::Ok();
}

Status parse_region_name(std::span<const std::uint8_t> value, AgentMetadata& md) {
  ByteReader r(value);
  const std::uint64_t id = r.u64();
  if (!r.ok()) return Corrupt("metadata: truncated region name record");
  std::string name = r.str(r.remaining());
  if (!validate_region_name(name).ok()) return Corrupt("metadata: bad region name");
  if (md.region_names.size() >= kMaxRegions) return Corrupt("metadata: too many region names");
  md.region_names[id] = std::move(name);
  return Status::Ok();
}

Status parse_instance(std::span<const std::uint8_t> value, AgentMetadata& md) {
  ByteReader r(value);
  md.instance.hi = r.u64();
  md.instance.lo = r.u64();
  if (!r.ok() || r.remaining() != 0) return Corrupt("metadata: instance id record is not 16 bytes");
  return Status::Ok();
}

Status parse_id(std::span<const std::uint8_t> value, std::string& out, const char* what) {
  if (value.size() > kMaxIdBytes) return Corrupt(std::string("metadata: ") + what + " too long");
  out.assign(reinterpret_cast<const char*>(value.data()), value.size());
  return Status::Ok();
}

}  // namespace

Status validate_entry_key(std::string_view key) {
  if (key.empty() || key.size() > kMaxEntryKeyBytes)
    return InvalidArgument("metadata entry key must be 1.." + std::to_string(kMaxEntryKeyBytes) + " bytes");
  for (char c : key)
    if (c < 0x21 || c > 0x7e) return InvalidArgument("metadata entry key must be printable ASCII without spaces");
  return Status::Ok();
}

Status validate_region_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxRegionNameBytes)
    return InvalidArgument("region name must be 1.." + std::to_string(kMaxRegionNameBytes) + " bytes, got " +
                           std::to_string(name.size()));
  for (char c : name)
    if (c < 0x21 || c > 0x7e) return InvalidArgument("region name must be printable ASCII without spaces");
  return Status::Ok();
}

Status validate_agent_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxAgentNameBytes)
    return InvalidArgument("agent name must be 1.." + std::to_string(kMaxAgentNameBytes) +
                           " bytes, got " + std::to_string(name.size()));
  for (char c : name) {
    if (c < 0x21 || c > 0x7e)
      return InvalidArgument("agent name must be printable ASCII without spaces");
  }
  return Status::Ok();
}

std::vector<std::uint8_t> encode_metadata(const AgentMetadata& md) {
  ByteWriter body;
  put_string_record(body, kTagName, md.name);
  {
    ByteWriter v;
    v.u64(md.instance.hi);
    v.u64(md.instance.lo);
    put_record(body, kTagInstance, v);
  }
  put_string_record(body, kTagHostId, md.host_id);
  put_string_record(body, kTagProcessId, md.process_id);
  if (md.side_channel) {
    ByteWriter v;
    v.u16(md.side_channel->port);
    v.str(md.side_channel->host);
    put_record(body, kTagSideChannel, v);
  }
  for (const auto& b : md.backends) {
    ByteWriter v;
    v.u16(static_cast<std::uint16_t>(b.name.size()));
    v.str(b.name);
    v.bytes(b.info);
    put_record(body, kTagBackend, v);
  }
  for (const auto& r : md.regions) {
    ByteWriter v;
    v.u64(r.id);
    v.u8(static_cast<std::uint8_t>(r.kind));
    v.u32(r.device);
    v.u64(r.address);
    v.u64(r.length);
    put_record(body, kTagRegion, v);
  }
  for (const auto& [key, value] : md.entries) {
    ByteWriter v;
    v.u16(static_cast<std::uint16_t>(key.size()));
    v.str(key);
    v.bytes(value);
    put_record(body, kTagEntry, v);
  }
  if (md.revision != 0) {
    ByteWriter v;
    v.u64(md.revision);
    put_record(body, kTagRevision, v);
  }
  for (const auto& [id, name] : md.region_names) {
    ByteWriter v;
    v.u64(id);
    v.str(name);
    put_record(body, kTagRegionName, v);
  }
  ByteWriter out;
  out.raw(kMagic, 4);
  out.u16(kMetadataVersion);
  out.u16(0);
  out.u32(static_cast<std::uint32_t>(body.size()));
  out.u64(XXH3_64bits(body.buffer().data(), body.size()));
  out.bytes(body.buffer());
  return out.take();
}

Result<AgentMetadata> decode_metadata(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < kHeaderBytes)
    return Corrupt("metadata: " + std::to_string(bytes.size()) + " bytes is shorter than its header");
  if (bytes.size() > kMaxMetadataBytes) return Corrupt("metadata: larger than the 64 MiB cap");
  ByteReader r(bytes);
  auto magic = r.take(4);
  if (std::memcmp(magic.data(), kMagic, 4) != 0) return Corrupt("metadata: bad magic (not kvferry metadata)");
  std::uint16_t version = r.u16();
  if (version != kMetadataVersion)
    return Corrupt("metadata: version " + std::to_string(version) + " is not supported (this build reads " +
                   std::to_string(kMetadataVersion) + ")");
  if (r.u16() != 0) return Corrupt("metadata: reserved header field is not zero");
  std::uint32_t body_len = r.u32();
  std::uint64_t checksum = r.u64();
  if (body_len != r.remaining())
    return Corrupt("metadata: body length " + std::to_string(body_len) + " but " +
                   std::to_string(r.remaining()) + " bytes follow (truncated or padded)");
  auto body = r.take(body_len);
  if (XXH3_64bits(body.data(), body.size()) != checksum) return Corrupt("metadata: checksum mismatch");

  AgentMetadata md;
  ByteReader br(body);
  while (br.remaining() > 0) {
    std::uint16_t tag = br.u16();
    std::uint32_t len = br.u32();
    auto value = br.take(len);
    if (!br.ok()) return Corrupt("metadata: truncated record");
    Status s;
    switch (tag) {
      case kTagName: s = parse_id(value, md.name, "name"); break;
      case kTagHostId: s = parse_id(value, md.host_id, "host id"); break;
      case kTagProcessId: s = parse_id(value, md.process_id, "process id"); break;
      case kTagBackend: s = parse_backend(value, md); break;
      case kTagRegion: s = parse_region(value, md); break;
      case kTagSideChannel: s = parse_side_channel(value, md); break;
      case kTagEntry: s = parse_entry(value, md); break;
      case kTagInstance: s = parse_instance(value, md); break;
      case kTagRevision: s = parse_revision(value, md); break;
      case kTagRegionName: s = parse_region_name(value, md); break;
      default: break;  // a record from a newer version: skip
    }
    KVF_RETURN_IF_ERROR(s);
  }
  if (Status s = validate_agent_name(md.name); !s.ok()) return Corrupt("metadata: " + s.message());
  if (md.instance.zero()) return Corrupt("metadata: agent '" + md.name + "' carries no instance id");
  return md;
}

}  // namespace kvferry::detail
