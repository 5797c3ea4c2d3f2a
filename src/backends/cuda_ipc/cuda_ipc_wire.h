// The cuda_ipc backend's control socket: the same-host link of core/host_link.h (hello,
// authentication, regions, revocation on an abstract Unix SOCK_SEQPACKET socket, same
// host, same user). Data never goes this way: the initiator's GPU copies it through IPC
// mappings of the target's memory. What cuda_ipc adds:
//
//   kRegion payload      u32 GPU, u64 offset in its allocation, u64 allocation size,
//                        cudaIpcMemHandle_t (no descriptor)
//   initiator -> target  kNotify      req (0: no acknowledgement wanted), message
//   target -> initiator  kNotifyAck   req (delivered to the inbox), or req + why the inbox
//                                     refused it (at most kMaxAckReason bytes)
//   (a kRevokeAck means: no copy touches the region any more, its handle is closed)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/host_link.h"
#include "core/socket_util.h"
#include "core/unix_socket.h"

namespace kvferry::detail::cuda_ipc {

inline constexpr std::uint32_t kProtocolVersion = 2;  // 2: the core's link, authentication
inline constexpr std::size_t kIpcHandleBytes = 64;  // sizeof(cudaIpcMemHandle_t)
inline constexpr std::size_t kMaxWireMessage = 1u << 20;
inline constexpr std::size_t kMaxAckReason = 4096;

// After the link's own messages (core/host_link.h).
enum class MessageType : std::uint16_t {
  kNotify = kFirstBackendMessage,
  kNotifyAck = kFirstBackendMessage + 1,
};

// One whole message; waits (poll) up to the deadline.
Status send_packet(int fd, const std::vector<std::uint8_t>& bytes, Deadline deadline);
// One whole message; Timeout if none arrived by the deadline, PeerLost on close.
Status recv_packet(int fd, std::vector<std::uint8_t>* bytes, Deadline deadline);

}  // namespace kvferry::detail::cuda_ipc
