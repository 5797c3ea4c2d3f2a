// The shm backend's use of the same-host link (core/host_link.h: hello, authentication,
// regions, revocation on an abstract Unix SOCK_SEQPACKET socket). Data and notifications
// never go this way: data is copied through mappings, notifications go through the
// shared rings (shm_ring.h). What shm adds to the link's messages:
//
//   kHello       fds: the control block's memfd (the rings), the initiator's eventfd
//   kHelloAck    fds: the target's eventfd
//   kRegion      payload: u64 offset of the region in its memfd; fd: that memfd, or
//                none for memory reached through process_vm_*
#pragma once

#include <cstdint>

namespace kvferry::detail::shm {

inline constexpr std::uint32_t kShmProtocolVersion = 2;

}  // namespace kvferry::detail::shm
