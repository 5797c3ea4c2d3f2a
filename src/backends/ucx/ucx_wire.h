// What the ucx backend puts in the agent's metadata, and its active messages.
//
// Connection info (versioned; parsed as untrusted input, every length capped). It says
// only where the agent is reached, so it stays the same for the agent's lifetime (the
// core refuses an instance whose connection info changes):
//   u32 magic "KVUC" | u16 version | u16 flags | u32 address bytes | worker address
//
// The remote keys of the registered regions come with the answer to a hello instead, so
// a session always starts from what the target serves at that moment (a peer that
// registers more memory bumps its metadata revision; the core then connects afresh).
//
// Active messages (payload only, no AM header), all checked the same way:
//   kHello      initiator -> target  u32 version, u64 session, u32 endpoint index (the n-th
//                                    endpoint the initiator created to the target's worker:
//                                    UCX pairs it with the target's n-th, ucx_links.cc),
//                                    name, initiator worker address
//               with a shared secret, the hello ends with the initiator's nonce (core/peer_auth.h)
//   kChallenge  target -> initiator  u64 session, target nonce, target proof (instead of kHelloAck)
//   kResponse   initiator -> target  u64 session, initiator proof; the target then answers kHelloAck
//   kRefuse     target -> initiator  u64 session, why (secrets disagree, proof wrong)
//   kHelloAck   target -> initiator  u64 session, region keys: u32 n, per region: u64 id,
//                                    u64 address, u64 length, u32 rkey bytes, packed rkey
//                                    (regions being revoked are left out)
//   kNotify     initiator -> target  u64 session, u64 request (0: no answer wanted), message
//   kNotifyAck  target -> initiator  u64 session, u64 request, why ("" : the agent kept it;
//                                    else why it did not: the sender's request fails)
//   kRevoke     target -> initiator  u64 session, u64 region id (stop using it, then ack)
//   kRevokeAck  initiator -> target  u64 session, u64 region id (nothing of ours in flight)
//   kBye        initiator -> target  u64 session (the initiator closed the link)
//
// The active-message data path (host memory without RDMA: UCX's one-sided put over TCP
// is a slow emulation, its rendezvous protocol is not; docs/benchmarks.md):
//   kPutData    initiator -> target  AM header u64 session, u64 token, u64 address;
//                                    data: the chunk (eager or rendezvous)
//   kCommit     initiator -> target  u64 session, u64 token, u8 has_note, note
//   kCommitAck  target -> initiator  u64 session, u64 token, u8 ok, why
//   kGetReq     initiator -> target  u64 session, u64 chunk, u64 address, u64 length
//   kGetData    target -> initiator  AM header u64 session, u64 chunk, u64 ok; data: the bytes
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/byte_io.h"
#include "kvferry/status.h"

namespace kvferry::detail::ucx {

inline constexpr std::uint32_t kInfoMagic = 0x4355564b;  // "KVUC"
inline constexpr std::uint16_t kInfoVersion = 2;
inline constexpr std::uint16_t kFlagRdma = 1;
inline constexpr std::uint32_t kMaxAddressBytes = 16u << 10;
inline constexpr std::uint32_t kMaxRkeyBytes = 4u << 10;
inline constexpr std::uint32_t kMaxInfoRegions = 4096;
// The largest hello answer: every region with the largest remote key.
inline constexpr std::size_t kMaxHelloAckBytes = 12 + kMaxInfoRegions * (28ull + kMaxRkeyBytes);
inline constexpr std::uint32_t kMaxNameBytes = 255;

enum AmId : std::uint16_t {
  kHello = 1, kHelloAck = 2, kNotify = 3, kRevoke = 4, kRevokeAck = 5, kBye = 6,
  kPutData = 7, kCommit = 8, kCommitAck = 9, kGetReq = 10, kGetData = 11,
  kChallenge = 12, kResponse = 13, kRefuse = 14, kNotifyAck = 15,
};
inline constexpr std::size_t kDataHeaderBytes = 24;
inline constexpr std::uint32_t kProtocolVersion = 4;

struct RegionKey {
  std::uint64_t id = 0;
  std::uint64_t address = 0;
  std::uint64_t length = 0;
  std::vector<std::uint8_t> rkey;
};

struct ConnectionInfo {
  std::uint16_t flags = 0;
  std::vector<std::uint8_t> address;
};

std::vector<std::uint8_t> encode_info(const ConnectionInfo& info);
Result<ConnectionInfo> decode_info(std::span<const std::uint8_t> bytes);

// The body of a hello answer after its session id.
void encode_region_keys(ByteWriter& w, const std::vector<RegionKey>& keys);
Result<std::vector<RegionKey>> decode_region_keys(ByteReader& r);

}  // namespace kvferry::detail::ucx
