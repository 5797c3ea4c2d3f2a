// The tcp backend's wire format. Every frame starts with a 32-byte header; some carry a
// payload of `len` bytes. Everything received is untrusted: the receiver checks magic,
// type, lengths against caps, and addresses against regions it registered.
//
// `len` is always the number of bytes that follow the header in the frame.
//
//   initiator -> target                          target -> initiator
//   kHello   hello payload                       kHelloAck (kError + message: refused)
//   kWrite   aux entries: segment table, then    kWriteAck once per stream per request,
//            the data [kLast, kNotify]            on kLast (kError + message)
//   kReadReq aux entries: segment table          kReadData: the segments' data, in request
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
// A segment table entry is strided: (addr, unit, stride, count) says `count` units of
// `unit` bytes at addr, addr + stride, ... (count 1: one contiguous range). A run of small
// pieces, such as one KV head slice per token at a fixed row stride, is one entry: the
// receiver checks it once (the first and the last byte in one registered region, every
// product and sum overflow-checked) and lands its units with readv() straight into place,
// up to IOV_MAX of them per call. Frames are sized by bytes (batch_bytes), not by how many
// pieces they carry; caps bound entries and units per frame. Version 2: version 1's
// entries were (addr, len) pairs.
#pragma once

#include <cstdint>

namespace kvferry::detail::tcp {

inline constexpr std::uint16_t kMagic = 0x464b;  // "KF"
inline constexpr std::uint32_t kProtocolVersion = 2;

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
inline constexpr std::uint32_t kMaxSegments = 1024;         // table entries of one frame
inline constexpr std::uint64_t kMaxFrameUnits = 1u << 16;   // units (iovecs) of one frame
inline constexpr std::uint64_t kSegmentEntryBytes = 32;     // (addr, unit, stride, count) u64

// One segment table entry as it travels (host byte order, like the header).
struct WireSegment {
  std::uint64_t addr = 0;
  std::uint64_t unit = 0;    // bytes of one unit
  std::uint64_t stride = 0;  // bytes from one unit's start to the next's (count > 1: >= unit)
  std::uint64_t count = 0;   // units
};
static_assert(sizeof(WireSegment) == kSegmentEntryBytes);
inline constexpr std::uint64_t kMaxMessageBytes = 1u << 20;
inline constexpr std::uint64_t kMaxHelloBytes = 1024;

}  // namespace kvferry::detail::tcp
