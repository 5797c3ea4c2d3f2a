#include "core/unix_socket.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <random>

namespace kvferry::detail {
namespace {

Result<sockaddr_un> abstract_address(const std::string& name, std::string_view who, socklen_t* len) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (name.empty() || name.size() + 2 > sizeof addr.sun_path)
    return Corrupt(std::string(who) + ": bad socket name (" + std::to_string(name.size()) + " bytes)");
  std::memcpy(addr.sun_path + 1, name.data(), name.size());  // sun_path[0] == 0: abstract
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return addr;
}

Result<UniqueFd> seqpacket_socket(std::string_view who) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return IoErrorFromErrno(std::string(who) + ": socket", errno);
  return fd;
}

}  // namespace

std::string unique_abstract_name(std::string_view prefix) {
  std::random_device rd;
  char tail[48];
  std::snprintf(tail, sizeof tail, "-%d-%08x%08x", ::getpid(), rd(), rd());
  return std::string(prefix) + tail;
}

Result<UniqueFd> listen_abstract(const std::string& name, std::string_view who) {
  KVF_ASSIGN_OR_RETURN(UniqueFd fd, seqpacket_socket(who));
  socklen_t len = 0;
  KVF_ASSIGN_OR_RETURN(sockaddr_un addr, abstract_address(name, who, &len));
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0)
    return IoErrorFromErrno(std::string(who) + ": bind abstract socket", errno);
  if (::listen(fd.get(), 64) != 0) return IoErrorFromErrno(std::string(who) + ": listen", errno);
  return fd;
}

Result<UniqueFd> connect_abstract(const std::string& name, std::string_view who) {
  KVF_ASSIGN_OR_RETURN(UniqueFd fd, seqpacket_socket(who));
  socklen_t len = 0;
  KVF_ASSIGN_OR_RETURN(sockaddr_un addr, abstract_address(name, who, &len));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0)
    return Unavailable(std::string(who) + ": cannot reach the peer's socket (not on this host or not running): " +
                       std::strerror(errno));
  return fd;
}

bool peer_is_ours(int fd, pid_t expected_pid) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  return cred.uid == ::getuid() && (expected_pid <= 0 || cred.pid == expected_pid);
}

}  // namespace kvferry::detail
