// Metadata pushed to our side channel, loaded on the agent's reactor thread without ever
// blocking it. Most pushes are decided at once (a new name, an update of the loaded
// instance, a predecessor known gone or known alive). One that names a loaded peer under
// another instance, where only the old instance's side channel can tell whether it is
// gone, waits for a probe run on the reactor (core/side_channel_probe.h); the push is
// answered when the probe concludes. Pushes about one instance share its probe; probes in
// flight are capped (a push beyond the cap is refused with Unavailable, to be retried), and
// each ends by min(connect_timeout, 1 s).
#include <utility>

#include "core/agent_impl.h"

namespace kvferry {

std::optional<Status> Agent::Impl::load_pushed(std::span<const std::uint8_t> metadata,
                                               detail::SideChannelHandlers::Later later) {
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  auto md = detail::decode_metadata(metadata);
  if (!md.ok()) return md.status();
  if (md->name == options_.name)
    return InvalidArgument("load_remote: the metadata names this agent itself ('" + md->name + "')");
  std::optional<detail::AgentMetadata> contested;  // the loaded instance to ask
  auto loaded = install_peer(*md, /*authoritative=*/false,
                             [&](const detail::AgentMetadata& old,
                                 const std::vector<std::shared_ptr<detail::BackendConnection>>& connections,
                                 const detail::InstanceId& incoming) {
                               bool ask = false;
                               Status here = replaceable_here(old, connections, incoming, &ask);
                               if (!ask) return here;
                               contested = old;
                               return Unavailable("probe needed");  // not reported: a probe starts below
                             });
  if (!contested) return loaded.status();
  const detail::AgentMetadata& old = *contested;
  const std::string key = "'" + old.name + "' (instance " + old.instance.hex() + ")";
  Status asked = probes_->ask(key, old.side_channel->host, old.side_channel->port, probe_deadline(),
                              [this, md = std::move(*md), old, later = std::move(later)](
                                  const Result<std::vector<std::uint8_t>>& probe) mutable {
                                later(conclude_push(std::move(md), old, probe));
                              });
  if (!asked.ok()) return asked.with_context("load_remote: another instance under a loaded name");
  return std::nullopt;
}

Status Agent::Impl::conclude_push(detail::AgentMetadata md, const detail::AgentMetadata& old,
                                  const Result<std::vector<std::uint8_t>>& probe) {
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  KVF_RETURN_IF_ERROR(judge_probe(old, probe, md.instance));
  // The probed instance is gone. Another may have taken the name meanwhile: that one is
  // judged on what is known here, never probed again from this push.
  const std::string name = md.name;
  return install_peer(std::move(md), /*authoritative=*/false,
                      [&](const detail::AgentMetadata& now_loaded,
                          const std::vector<std::shared_ptr<detail::BackendConnection>>& connections,
                          const detail::InstanceId& incoming) {
                        if (now_loaded.instance == old.instance) return Status::Ok();
                        bool ask = false;
                        Status here = replaceable_here(now_loaded, connections, incoming, &ask);
                        if (!ask) return here;
                        return Unavailable("load_remote: peer '" + name +
                                           "' was replaced while its old instance was being asked; push again");
                      })
      .status();
}

}  // namespace kvferry
