// Messages with attached file descriptors over a Unix SOCK_SEQPACKET socket (SCM_RIGHTS):
// how a same-host target hands memfds and eventfds to an initiator, never a path that
// anyone could open. `who` prefixes error messages ("shm").
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "core/socket_util.h"

namespace kvferry::detail {

inline constexpr std::size_t kMaxMessageBytes = 64u << 10;
inline constexpr std::size_t kMaxFdsPerMessage = 8;

Status send_message(int sock, std::span<const std::uint8_t> bytes, std::span<const int> fds, Deadline deadline,
                    std::string_view who);
// Receives one message (and the fds attached, which the caller then owns).
// Timeout when none came by the deadline (Clock::now(): only what is there already).
Status recv_message(int sock, std::vector<std::uint8_t>* bytes, std::vector<UniqueFd>* fds, Deadline deadline,
                    std::string_view who);

}  // namespace kvferry::detail
