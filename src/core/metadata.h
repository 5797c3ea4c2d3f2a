// Agent metadata: what a peer needs to reach us. Encoded as a versioned blob:
//
//   "KVFM" | version u16 | reserved u16 | body length u32 | xxh3-64 of body u64 | body
//   body = records { tag u16 | length u32 | value }
//
// Unknown tags and unknown memory kinds are skipped, so later additions (new kinds, new
// backend fields) need no version change. decode() treats its input as hostile.
//
// Format history (version 1 throughout; each addition is an optional record that older
// readers skip, and blobs without it decode as before: metadata_test checks both ways):
//   tag 1..7  name, host id, process id, backend, region, side channel, entry
//   tag 9     revision u64: grows with every change of the agent's metadata (live updates)
//   tag 10    region name: region id u64 | name (named regions, e.g. "kv.layer.17")
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/instance_id.h"
#include "kvferry/status.h"

namespace kvferry::detail {

inline constexpr std::uint16_t kMetadataVersion = 1;
inline constexpr std::size_t kMaxMetadataBytes = 64u << 20;
inline constexpr std::size_t kMaxAgentNameBytes = 255;
inline constexpr std::size_t kMaxRegions = 1u << 20;
inline constexpr std::size_t kMaxBackends = 64;
inline constexpr std::size_t kMaxBackendInfoBytes = 64u << 10;
inline constexpr std::size_t kMaxEntries = 64;
inline constexpr std::size_t kMaxEntryKeyBytes = 64;
inline constexpr std::size_t kMaxEntryValueBytes = 64u << 10;
inline constexpr std::size_t kMaxRegionNameBytes = 128;

struct BackendEntry {
  std::string name;
  std::vector<std::uint8_t> info;
};

struct SideChannelAddress {
  std::string host;
  std::uint16_t port = 0;
};

struct AgentMetadata {
  std::string name;
  InstanceId instance;  // required (never zero): which incarnation of `name` this is
  std::string host_id;
  std::string process_id;
  std::optional<SideChannelAddress> side_channel;
  std::vector<BackendEntry> backends;
  std::vector<RegionInfo> regions;
  std::map<std::string, std::vector<std::uint8_t>> entries;  // application entries
  std::uint64_t revision = 0;                                 // 0: the peer sends none
  std::map<std::uint64_t, std::string> region_names;          // region id -> name
};

std::vector<std::uint8_t> encode_metadata(const AgentMetadata& md);
Result<AgentMetadata> decode_metadata(std::span<const std::uint8_t> bytes);

// Agent names: 1..255 bytes of printable ASCII.
Status validate_agent_name(std::string_view name);
// Application entry keys: 1..64 bytes of printable ASCII.
Status validate_entry_key(std::string_view key);
// Region names: 1..128 bytes of printable ASCII.
Status validate_region_name(std::string_view name);

}  // namespace kvferry::detail
