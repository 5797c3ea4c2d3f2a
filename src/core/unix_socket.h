// Same-host control channels of the shm and cuda_ipc backends: abstract Unix
// SOCK_SEQPACKET sockets (no file system path; they only connect within one network
// namespace, which is part of same-host detection), the peer's credentials, and
// eventfd bells that wake a sleeping progress thread.
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

// A non-blocking eventfd, and a write of 1 to one (never blocks; errors are ignored:
// a bell that cannot ring means its reader is already awake or gone).
Result<UniqueFd> make_eventfd(std::string_view who);
void ring_eventfd(int fd);

}  // namespace kvferry::detail
