// The tcp backend's wire format. Every frame starts with a 32-byte header; some carry a
// payload of `len` bytes. Everything received is untrusted: the receiver checks magic,
// type, lengths against caps, and addresses against regions it registered.
//
// `len` is always the number of bytes that follow the header in the frame.
//
//   initiator -> target                          target -> initiator
//   kHello   hello payload                       kHelloAck (kError + message: refused)
//   kWrite   aux segments: table of (addr, len)  kWriteAck once per stream per request,
//            pairs, then their data [kLast,       on kLast (kError + message)
//            kNotify]
//   kReadReq aux segments: table                 kReadData: the segments' data, in request
//                                                order per stream (kError + message)
//   kNotify  addr = bytes to await, message      kNotifyAck (aux 0 delivered, 1 not; kError +
//            (core/notification_wire.h bytes)      message: the peer's inbox refused it)
//   kPing                                        kPong
//                                                kReqError (message) fails a request
//
// With a shared secret (core/peer_auth.h) the hello ends with the initiator's nonce and
// the target answers kChallenge (its nonce and proof); the initiator sends kAuth (its
// proof), then the target answers kHelloAck as usual. Each stream authenticates itself.
//   kHello   ... + nonce                          kChallenge (nonce, proof)
//   kAuth    proof                                kHelloAck
//
// A batch frame carries up to 64 segments so the receiver validates them together and
// lands them with one readv() into scattered destinations: one system call per batch
// rather than per block is what lets 64 KiB blocks reach the plain-stream ceiling.
#pragma once

#include <cstdint>

namespace kvferry::detail::tcp {

inline constexpr std::uint16_t kMagic = 0x464b;  // "KF"
inline constexpr std::uint32_t kProtocolVersion = 1;

enum class FrameType : std::uint8_t {
  kHello = 1,
  kHelloAck = 2,
  kWrite = 3,
  kWriteAck = 4,
  kReadReq = 5,
  kReadData = 6,
  kNotify = 7,
  kNotifyAck = 8,
  kPing = 9,
  kPong = 10,
  kReqError = 11,
  kChallenge = 12,
  kAuth = 13,
};

enum FrameFlags : std::uint8_t {
  kFlagLast = 1,    // last chunk of this request on this stream
  kFlagNotify = 2,  // the request carries a notification: the target counts its bytes
  kFlagError = 4,   // the payload is an error message
};

struct WireHeader {
  std::uint16_t magic = kMagic;
  std::uint8_t type = 0;
  std::uint8_t flags = 0;
  std::uint32_t aux = 0;
  std::uint64_t req = 0;   // request id, unique per session
  std::uint64_t addr = 0;  // target address (write, read request) or byte count (notify)
  std::uint64_t len = 0;   // payload length, or requested length for kReadReq
};
static_assert(sizeof(WireHeader) == 32);

// Caps on what a peer may make us receive or allocate.
inline constexpr std::uint64_t kMaxChunkBytes = 64u << 20;  // data bytes of one frame
inline constexpr std::uint32_t kMaxSegments = 1024;         // segments of one frame
inline constexpr std::uint64_t kSegmentEntryBytes = 16;     // (addr u64, len u64)
inline constexpr std::uint64_t kMaxMessageBytes = 1u << 20;
inline constexpr std::uint64_t kMaxHelloBytes = 1024;

}  // namespace kvferry::detail::tcp
