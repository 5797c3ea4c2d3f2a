// Messages with attached file descriptors over a Unix SOCK_SEQPACKET socket (SCM_RIGHTS):
// how a target hands memfds and an eventfd to a same-host initiator, never a path that
// anyone could open.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/socket_util.h"

namespace kvferry::detail::shm {

inline constexpr std::size_t kMaxMessageBytes = 64u << 10;
inline constexpr std::size_t kMaxFdsPerMessage = 8;

Status send_message(int sock, std::span<const std::uint8_t> bytes, std::span<const int> fds, Deadline deadline);
// Receives one message (and the fds attached, which the caller then owns).
Status recv_message(int sock, std::vector<std::uint8_t>* bytes, std::vector<UniqueFd>* fds, Deadline deadline);

}  // namespace kvferry::detail::shm
