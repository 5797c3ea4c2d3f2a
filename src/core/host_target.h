// HostTarget: the target side of the same-host backends (shm, cuda_ipc), kept once in the
// core and served by the agent's reactor (core/reactor.h): the abstract Unix socket it
// listens on, accepting only processes of our user, the link's hello (core/host_link.h),
// the live regions announced to each initiator, the set of connected initiators, and
// revocation on deregistration (core/revocation.h). The backend adds what is its own
// through hooks: what the hello's fds mean (shm: a control block and an eventfd), the
// region payloads it registers (shm: a memfd offset; cuda_ipc: an IPC handle), and its
// own messages (cuda_ipc: notifications).
//
// Threading: add_region, remove_region and drop are thread-safe; hooks run on the reactor
// thread, one at a time, and must not block beyond a send's short deadline. remove_region
// waits (bounded by peer_timeout) on the caller's thread, never on the reactor's.
// Ownership: the destructor ends every watch and timer before anything they touch goes;
// an initiator still connected then sees its socket close.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/host_link.h"
#include "core/reactor.h"
#include "core/revocation.h"
#include "core/socket_util.h"

namespace kvferry::detail {

// What a same-host target takes from the agent (BackendContext).
struct HostTargetOptions {
  std::string agent_name;
  std::chrono::milliseconds peer_timeout{5000};
  std::size_t max_notification_bytes = 64 * 1024;
  DeliverNotification deliver;
  std::shared_ptr<const SharedSecret> secret;  // null: initiators are not authenticated

  static HostTargetOptions of(const BackendContext& ctx) {
    return HostTargetOptions{ctx.agent_name, ctx.peer_timeout, ctx.max_notification_bytes,
                             ctx.deliver_notification, ctx.secret};
  }
  HostLinkConfig link(std::string backend, std::uint32_t version) const {
    return HostLinkConfig{std::move(backend), version, agent_name, secret, peer_timeout};
  }
};

class HostTarget {
 public:
  // One initiator's connection. Its socket stays open until the object goes (a drop only
  // shuts it down), so a revoke sent from another thread never writes to a reused fd.
  struct Peer {
    struct Attachment {  // what the backend keeps per initiator
      virtual ~Attachment() = default;
    };
    UniqueFd sock;
    std::string name;  // the initiator agent's, once its hello is accepted
    std::atomic<bool> dead{false};
    std::unique_ptr<Attachment> attachment;
  };

  struct Hooks {
    std::size_t hello_fds = 0;  // how many fds the backend's hello carries
    // The hello was accepted: check its fds, attach what the backend keeps, and put the
    // fds the answer carries in *answer (the backend keeps them open). An error refuses
    // the initiator with its message.
    std::function<Status(Peer&, std::vector<UniqueFd>& fds, std::vector<int>* answer)> accept;
    // A message of the backend's own (types from kFirstBackendMessage on) from a ready
    // initiator. An error drops it.
    std::function<Status(Peer&, std::span<const std::uint8_t> msg)> on_message;
    // A ready initiator joined (optional; it has `dead` set once dropped).
    std::function<void(const std::shared_ptr<Peer>&)> on_ready;
    // Receives one message (default: recv_message, fds attached, 64 KiB at most).
    std::function<Status(int sock, std::vector<std::uint8_t>*, std::vector<UniqueFd>*)> receive;
  };

  // A registered region as initiators are told of it.
  struct Region {
    RegionInfo info;
    std::vector<std::uint8_t> payload;  // the backend's part of kRegion
    std::shared_ptr<UniqueFd> fd;       // sent with it (null: none)
  };

  // Listens on a fresh abstract name "<socket_prefix>-<pid>-<random>". `reactor`: the
  // agent's; null starts one of our own (backends made without an agent).
  static Result<std::unique_ptr<HostTarget>> start(std::shared_ptr<Reactor> reactor, HostLinkConfig link,
                                                   const std::string& socket_prefix, Hooks hooks);
  ~HostTarget();
  HostTarget(const HostTarget&) = delete;
  HostTarget& operator=(const HostTarget&) = delete;

  const std::string& socket_name() const { return socket_name_; }
  Reactor& reactor() { return *reactor_; }

  // Initiators that connect from now on are told of it.
  void add_region(Region region);
  // Stops announcing it, then revokes it from every connected initiator: returns once
  // each confirmed, or was cut off after peer_timeout. Unknown ids: nothing to do.
  Status remove_region(std::uint64_t id);

  // Drops an initiator: its socket is shut down (it sees the hang-up), its watch ends and
  // it leaves the revocation set. Any thread, also a hook; not under a lock a hook takes.
  void drop(Peer& peer);

 private:
  struct Conn;  // a Peer and its link state
  HostTarget() = default;
  void accept_all();
  void on_readable(const std::shared_ptr<Conn>& c);
  void handshake(Conn& c, std::vector<std::uint8_t> msg, std::vector<UniqueFd> fds);
  void reap();  // handshakes that never came
  TargetRevocation::Link revocation_link(const std::shared_ptr<Conn>& c);

  std::shared_ptr<Reactor> reactor_;
  std::shared_ptr<const HostLinkConfig> link_;
  Hooks hooks_;
  std::string socket_name_;
  UniqueFd listener_;
  Reactor::Id listen_watch_ = 0, reap_timer_ = 0;

  std::mutex mu_;  // regions_, conns_; held while a hello's regions go out and it joins
  std::map<std::uint64_t, Region> regions_;
  std::map<Conn*, std::shared_ptr<Conn>> conns_;
  std::unique_ptr<TargetRevocation> revocation_;
};

}  // namespace kvferry::detail
