// Who may take a loaded peer's name. A peer is its (name, instance id); the name alone
// proves nothing, since anyone who reaches our side channel can push metadata under it.
//
// - The same instance may update what it announces (regions, entries) but not where it
//   is reached (host, process, backends, side channel): copying a live peer's instance
//   id from its public metadata gains an impostor nothing.
// - Another instance replaces the entry only when the loaded one is gone: one of our
//   connections to it is lost; or it lived in this process and was destroyed; or it ran
//   on this host, in our pid namespace, and its process has exited; or its side channel
//   refuses connections or answers as someone else. Otherwise the caller must
//   forget_remote() first. A probe that times out decides nothing (a slow peer is not a
//   dead one), so an attacker cannot win by making the real peer slow.
#include <cerrno>
#include <cstring>

#include "core/agent_impl.h"
#include "core/host_identity.h"

namespace kvferry {
namespace {

constexpr std::chrono::milliseconds kProbeLimit{1000};

std::string who(const detail::AgentMetadata& md) { return "'" + md.name + "' (instance " + md.instance.hex() + ")"; }

}  // namespace

Status Agent::Impl::same_reachability(const detail::AgentMetadata& old, const detail::AgentMetadata& update) {
  std::string differs;
  if (old.host_id != update.host_id) differs = "host";
  else if (old.process_id != update.process_id) differs = "process";
  else if (old.side_channel && (!update.side_channel || old.side_channel->host != update.side_channel->host ||
                                old.side_channel->port != update.side_channel->port))
    differs = "side channel";
  else if (old.backends.size() != update.backends.size()) differs = "backends";
  else
    for (std::size_t i = 0; i < old.backends.size() && differs.empty(); ++i)
      if (old.backends[i].name != update.backends[i].name || old.backends[i].info != update.backends[i].info)
        differs = "connection info of backend '" + old.backends[i].name + "'";
  if (differs.empty()) return Status::Ok();
  return AlreadyExists("load_remote: metadata of " + who(update) + " names the loaded instance but another " +
                       differs + "; refused (an instance may update its regions and entries, not where it is reached)");
}

detail::Deadline Agent::Impl::probe_deadline() const {
  return detail::deadline_after(std::min(options_.connect_timeout, kProbeLimit));
}

namespace {
Status refusal(const detail::AgentMetadata& old, const std::string& why, const detail::InstanceId& incoming) {
  return AlreadyExists("load_remote: peer " + who(old) + " " + why + "; metadata of another instance " +
                       incoming.hex() + " under that name is refused. A restarted peer is accepted once the old "
                       "instance is lost or its side channel refuses connections, or after forget_remote('" +
                       old.name + "')");
}
}  // namespace

Status Agent::Impl::replaceable_here(const detail::AgentMetadata& old,
                                     const std::vector<std::shared_ptr<detail::BackendConnection>>& connections,
                                     const detail::InstanceId& incoming, bool* ask) const {
  *ask = false;
  for (const auto& c : connections)
    if (c && c->health().code() == StatusCode::kPeerLost) return Status::Ok();
  if (old.process_id == process_id_) {
    if (!detail::instance_alive_here(old.instance)) return Status::Ok();
    return refusal(old, "is a live agent of this process", incoming);
  }
  if (old.host_id == host_id_ && detail::process_exited(old.process_id)) return Status::Ok();
  if (old.side_channel) {
    *ask = true;
    return Status::Ok();
  }
  return refusal(old, "is not known to be lost (no lost connection, no side channel to ask)", incoming);
}

Status Agent::Impl::judge_probe(const detail::AgentMetadata& old, const Result<std::vector<std::uint8_t>>& probe,
                                const detail::InstanceId& incoming) const {
  if (probe.ok()) {
    auto md = detail::decode_metadata(*probe);
    if (md.ok() && (md->name != old.name || md->instance != old.instance)) return Status::Ok();
    return refusal(old, md.ok() ? "still answers on its side channel" : "answers on its side channel with unreadable metadata",
                   incoming);
  }
  if (probe.status().message().find(std::strerror(ECONNREFUSED)) != std::string::npos) return Status::Ok();
  return refusal(old, "cannot be shown gone (" + probe.status().message() + ")", incoming);
}

Status Agent::Impl::may_replace(const detail::AgentMetadata& old,
                                const std::vector<std::shared_ptr<detail::BackendConnection>>& connections,
                                const detail::InstanceId& incoming) const {
  bool ask = false;
  Status here = replaceable_here(old, connections, incoming, &ask);
  if (!ask) return here;
  // A blocking probe would stall every backend's progress: the loop's own pushes take
  // load_pushed, and a caller on the loop (a callback) is refused.
  if (reactor_ && reactor_->in_reactor_thread())
    return refusal(old, "cannot be asked from the agent's event loop (load it from another thread)", incoming);
  auto probe = detail::side_channel_call(old.side_channel->host, old.side_channel->port, detail::SideFrame::kFetch, {},
                                         detail::SideFrame::kMetadata, probe_deadline(), secret_);
  return judge_probe(old, probe, incoming);
}

}  // namespace kvferry
