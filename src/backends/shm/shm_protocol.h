// Control messages of the shm backend over its Unix SOCK_SEQPACKET socket (data and
// notifications never go this way: data is copied through mappings, notifications go
// through the shared rings).
//
//   initiator -> target  kHello       version, target name, initiator name
//                                     fds: control block memfd, initiator eventfd
//   target -> initiator  kHelloAck    ok, message;  fds: target eventfd
//                        kRegion      id, address, length, offset;  fd: its memfd, or
//                                     none for memory reached through process_vm_*
//                                     (every live region is announced; what is not
//                                     announced is not reachable, whatever the metadata said)
//                        kRegionsEnd
//                        kRevoke      id (the target deregistered it: stop using it)
//   initiator -> target  kRevokeAck   id (no copy touches it any more)
//
// With a shared secret (core/peer_auth.h) the hello ends with the initiator's nonce and,
// before kHelloAck:
//   target -> initiator  kChallenge   the target's nonce and proof
//   initiator -> target  kAuth        the initiator's proof
#pragma once

#include <cstdint>
#include <string>

namespace kvferry::detail::shm {

inline constexpr std::uint32_t kShmProtocolVersion = 2;

enum class MessageType : std::uint16_t {
  kHello = 1,
  kHelloAck = 2,
  kRegion = 3,
  kRegionsEnd = 4,
  kRevoke = 5,
  kRevokeAck = 6,
  kChallenge = 7,
  kAuth = 8,
};

}  // namespace kvferry::detail::shm
