// The same-host link of the shm and cuda_ipc backends: an abstract Unix SOCK_SEQPACKET
// socket per target (no file system path; same network namespace, same user, checked
// with SO_PEERCRED), its handshake and its revocation messages, kept once in the core
// (docs/backend_guide.md §6). Data never goes this way: the initiator copies through
// mappings of the target's memory (memfds, IPC handles) that the handshake hands over.
//
//   initiator -> target  kHello       version, target name, initiator name [, auth offer]
//                                     fds: the backend's (shm: control block, eventfd)
//   target -> initiator  kChallenge   with a shared secret: the target's nonce and proof
//   initiator -> target  kAuth        with a shared secret: the initiator's proof
//   target -> initiator  kHelloAck    ok, why refused;  fds: the backend's (shm: eventfd)
//                        kRegion      id, address, length, the backend's payload (shm:
//                                     offset in its memfd; cuda_ipc: GPU, IPC handle);
//                                     fd: the backend's, if any (shm: the memfd). Every
//                                     live region is announced; what is not announced
//                                     is not reachable, whatever the metadata said.
//                        kRegionsEnd
//   target -> initiator  kRevoke      id (the target deregistered it: stop using it)
//   initiator -> target  kRevokeAck   id (no copy touches it any more)
//   either way           the backend's own messages, types from kFirstBackendMessage on
//
// Authentication (core/peer_auth.h) binds the proofs to the exact hello bytes.
// Not thread-safe: a HostLinkAcceptor belongs to one connection, on one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/peer_auth.h"
#include "core/socket_util.h"

namespace kvferry::detail {

enum class HostMessage : std::uint16_t {
  kHello = 1,
  kHelloAck = 2,
  kRegion = 3,
  kRegionsEnd = 4,
  kRevoke = 5,
  kRevokeAck = 6,
  kChallenge = 7,
  kAuth = 8,
};
inline constexpr std::uint16_t kFirstBackendMessage = 16;

// Who runs the link: `backend` prefixes errors and separates authentication purposes.
struct HostLinkConfig {
  std::string backend;
  std::uint32_t version = 0;  // the backend's protocol version
  std::string agent_name;     // ours
  std::shared_ptr<const SharedSecret> secret;  // null: no authentication
  std::chrono::milliseconds peer_timeout{5000};
};

// A region as the target announced it; `fd` is ours to keep or close.
struct AnnouncedRegion {
  std::uint64_t id = 0, address = 0, length = 0;
  std::span<const std::uint8_t> payload;
  UniqueFd fd;
};

// The initiator's half on a connected socket: the hello to `target` with `fds`, the
// answer, then each announced region through `on_region` (an error stops there) until
// the end. Returns the answer's fds (exactly `answer_fds` of them, or an error).
Result<std::vector<UniqueFd>> initiate_host_link(int sock, const HostLinkConfig& cfg, const std::string& target,
                                                 std::span<const int> fds, std::size_t answer_fds,
                                                 const std::function<Status(AnnouncedRegion&)>& on_region,
                                                 Deadline deadline);

// The target's half of one connection until its hello is accepted.
class HostLinkAcceptor {
 public:
  // `hello_fds`: how many fds the backend's hello carries.
  HostLinkAcceptor(std::shared_ptr<const HostLinkConfig> cfg, std::size_t hello_fds);
  // One message of the connection. true: the hello is accepted (peer(), hello_fds()):
  // the backend checks its fds, then calls answer() and sends its regions, or refuse().
  // false: more is to come (a challenge went out). An error: the connection was refused
  // (the refusal went out); drop it.
  Result<bool> on_message(int sock, std::vector<std::uint8_t> msg, std::vector<UniqueFd> fds);
  const std::string& peer() const { return peer_; }
  std::vector<UniqueFd>& hello_fds() { return hello_fds_; }
  // Sends the refusal; returns an error naming why.
  Status refuse(int sock, const std::string& why);
  Status answer(int sock, std::span<const int> fds, Deadline deadline);

 private:
  std::shared_ptr<const HostLinkConfig> cfg_;
  const std::size_t expected_fds_;
  std::unique_ptr<TargetAuth> auth_;  // with a secret: after the challenge
  std::vector<std::uint8_t> hello_;
  std::vector<UniqueFd> hello_fds_;
  std::string peer_;
};

// kRegion (with `fd` attached when >= 0) and kRegionsEnd.
Status send_host_region(int sock, const AnnouncedRegion& region, int fd, Deadline deadline, std::string_view who);
Status send_host_regions_end(int sock, Deadline deadline, std::string_view who);

// kRevoke / kRevokeAck of a region, and reading one back (nullopt: not that message).
std::vector<std::uint8_t> host_revoke_message(HostMessage type, std::uint64_t region);
std::optional<std::uint64_t> parse_host_revoke(std::span<const std::uint8_t> msg, HostMessage type);

// Accepts every pending connection on `listener` whose process runs as our user (others
// are closed at once): non-blocking, close-on-exec.
std::vector<UniqueFd> accept_host_links(int listener);

}  // namespace kvferry::detail
