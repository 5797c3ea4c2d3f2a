// The cuda_ipc backend's control socket: an abstract Unix SOCK_SEQPACKET socket per
// target (same host, same user, checked with SO_PEERCRED). Data never goes this way:
// the initiator's GPU copies it through IPC mappings of the target's memory.
//
//   initiator -> target  kHello       version, target name, initiator name
//   target -> initiator  kHelloAck    ok, message
//                        kRegion      id, device, address, length, offset in its
//                                     allocation, allocation size, cudaIpcMemHandle_t
//                        kRegionsEnd
//   initiator -> target  kNotify      req (0: no acknowledgement wanted), message
//   target -> initiator  kNotifyAck   req (delivered to the inbox), or req + why the inbox
//                                     refused it (at most kMaxAckReason bytes)
//   target -> initiator  kRevoke      id (the target deregistered it: stop using it)
//   initiator -> target  kRevokeAck   id (no copy touches it any more; handle closed)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/socket_util.h"
#include "core/unix_socket.h"

namespace kvferry::detail::cuda_ipc {

inline constexpr std::uint32_t kProtocolVersion = 1;
inline constexpr std::size_t kIpcHandleBytes = 64;  // sizeof(cudaIpcMemHandle_t)
inline constexpr std::size_t kMaxWireMessage = 1u << 20;
inline constexpr std::size_t kMaxAckReason = 4096;

enum class MessageType : std::uint16_t {
  kHello = 1,
  kHelloAck = 2,
  kRegion = 3,
  kRegionsEnd = 4,
  kNotify = 5,
  kNotifyAck = 6,
  kRevoke = 7,
  kRevokeAck = 8,
};

// One whole message; waits (poll) up to the deadline.
Status send_packet(int fd, const std::vector<std::uint8_t>& bytes, Deadline deadline);
// One whole message; Timeout if none arrived by the deadline, PeerLost on close.
Status recv_packet(int fd, std::vector<std::uint8_t>* bytes, Deadline deadline);

}  // namespace kvferry::detail::cuda_ipc
