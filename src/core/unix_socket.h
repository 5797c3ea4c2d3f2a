// Same-host control channels of the shm and cuda_ipc backends: abstract Unix
// SOCK_SEQPACKET sockets (no file system path; they only connect within one network
// namespace, which is part of same-host detection) and the peer's credentials.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "core/socket_util.h"

namespace kvferry::detail {

// "<prefix>-<pid>-<64 random bits in hex>": unique per listener.
std::string unique_abstract_name(std::string_view prefix);
// Non-blocking listening / connected sockets. `who` prefixes error messages ("shm").
// connect_abstract says Unavailable when nobody listens under that name here.
Result<UniqueFd> listen_abstract(const std::string& name, std::string_view who);
Result<UniqueFd> connect_abstract(const std::string& name, std::string_view who);

// True if the process at the other end of `fd` runs as our user (and, when
// `expected_pid` > 0, is that process).
bool peer_is_ours(int fd, pid_t expected_pid = 0);

}  // namespace kvferry::detail
