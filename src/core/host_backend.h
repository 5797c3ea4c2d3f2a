// HostBackend: the class of a same-host backend (shm, cuda_ipc), kept once in the core:
// a target (regions, the socket initiators connect to, whose name is the connection
// info) and an initiator that connects to a peer's target by that name and returns a
// session with the connection's methods (core/session_connection.h). Both ends move
// one memory kind, between processes of one host, with notifications and the link's
// authentication (core/host_link.h). The backend adds its name and cost model.
//
//   Target:    add_region(RegionInfo), remove_region(id), socket_name()
//   Initiator: connect(PeerEndpoint, socket name, Deadline) -> shared_ptr<Session>
//
// Threading as the Backend interface (core/backend.h). Ownership: the initiator's
// sessions are ended before the target (a backend with more to tear down, such as a copy
// pool the sessions use, resets both in its own destructor before that goes).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/session_connection.h"

namespace kvferry::detail {

template <typename Target, typename Initiator>
class HostBackend : public Backend {
 public:
  HostBackend(BackendContext ctx, MemoryKind kind, std::unique_ptr<Target> target,
              std::unique_ptr<Initiator> initiator)
      : ctx_(std::move(ctx)), kind_(kind), target_(std::move(target)), initiator_(std::move(initiator)) {}
  ~HostBackend() override {
    initiator_.reset();
    target_.reset();
  }

  Capabilities capabilities() const override {
    Capabilities c;
    c.local_kinds = {kind_};
    c.remote_kinds = {kind_};
    c.same_host_only = true;
    c.notifications = true;
    c.authenticates = true;  // the hello on its socket
    return c;
  }
  Status register_region(const RegionInfo& r) override { return target_->add_region(r); }
  Status deregister_region(std::uint64_t id) override { return target_->remove_region(id); }
  std::vector<std::uint8_t> connection_info() const override {
    const std::string& n = target_->socket_name();
    return std::vector<std::uint8_t>(n.begin(), n.end());
  }
  Result<std::unique_ptr<BackendConnection>> connect(const PeerEndpoint& peer) override {
    if (peer.connection_info.empty() || peer.connection_info.size() > 100)
      return Corrupt(std::string(name()) + ": bad connection info from '" + peer.agent_name + "'");
    std::string socket(peer.connection_info.begin(), peer.connection_info.end());
    KVF_ASSIGN_OR_RETURN(auto session,
                         initiator_->connect(peer, socket, deadline_after(ctx_.connect_timeout)));
    using Session = typename decltype(session)::element_type;
    return std::unique_ptr<BackendConnection>(new SessionConnection<Session>(std::move(session)));
  }

 protected:
  BackendContext ctx_;
  const MemoryKind kind_;
  std::unique_ptr<Target> target_;
  std::unique_ptr<Initiator> initiator_;
};

}  // namespace kvferry::detail
