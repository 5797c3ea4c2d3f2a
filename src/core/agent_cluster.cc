// The agent among many: the metadata service, peer events, named regions, metrics.
#include <algorithm>

#include "core/agent_impl.h"

namespace kvferry {

std::string_view to_string(PeerEventKind kind) noexcept {
  switch (kind) {
    case PeerEventKind::kJoined: return "joined";
    case PeerEventKind::kUpdated: return "updated";
    case PeerEventKind::kRestarted: return "restarted";
    case PeerEventKind::kLeft: return "left";
  }
  return "unknown";
}

Status Agent::Impl::start_cluster_services() {
  metrics_->set_agent(options_.name);
  if (!options_.metrics_address.empty()) {
    // The endpoint's thread is stopped in shutdown() before `this` goes away.
    KVF_ASSIGN_OR_RETURN(metrics_server_,
                         detail::MetricsServer::start(options_.metrics_address, [this] { return metrics_text(); }));
  }
  if (options_.metadata_service.empty()) return Status::Ok();
  if (options_.metadata_lease < std::chrono::seconds(2))
    return InvalidArgument("metadata_lease must be at least 2 s (etcd's shortest lease), got " +
                           std::to_string(options_.metadata_lease.count()) + " s");
  KVF_ASSIGN_OR_RETURN(detail::MetadataServiceUrl url, detail::parse_metadata_service_url(options_.metadata_service));
  detail::MetadataServiceHooks hooks;
  // The service's threads stop in shutdown() before `this` goes away.
  hooks.local_metadata = [this] { return local_metadata(); };
  hooks.peer_put = [this](const std::string& name, std::span<const std::uint8_t> bytes) {
    auto md = detail::decode_metadata(bytes);
    if (!md.ok() || md->name != name) {
      service_warnings_.fetch_add(1, std::memory_order_relaxed);
      return;  // a corrupt or mislabelled entry is ignored, never loaded
    }
    std::shared_lock life(life_mu_);
    if (closed_) return;
    (void)install_peer(std::move(md).value(), /*authoritative=*/true);
  };
  hooks.peer_gone = [this](const std::string& name) {
    remove_peer(name, "left the metadata service (it shut down, or its lease of " +
                          std::to_string(options_.metadata_lease.count()) + " s ran out)");
  };
  hooks.warn = [this](const Status&) { service_warnings_.fetch_add(1, std::memory_order_relaxed); };
  KVF_ASSIGN_OR_RETURN(auto service, detail::MetadataService::start(std::move(url), options_.name,
                                                                    options_.metadata_lease,
                                                                    options_.connect_timeout, std::move(hooks)));
  std::lock_guard lock(service_mu_);
  service_ = std::move(service);
  return Status::Ok();
}

void Agent::Impl::publish_change() {
  std::lock_guard lock(service_mu_);
  if (service_) service_->republish();
}

std::vector<std::string> Agent::Impl::find_peers(std::string_view prefix) const {
  std::vector<std::string> out;
  std::lock_guard lock(peers_mu_);
  for (auto it = peers_.lower_bound(prefix); it != peers_.end(); ++it) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    if (!is_self(it->first)) out.push_back(it->first);
  }
  return out;
}

Result<std::vector<std::string>> Agent::Impl::wait_for_peers(std::string_view prefix, std::size_t count,
                                                             std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto found = find_peers(prefix);
    if (found.size() >= count) return found;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline)
      return Timeout("wait_for_peers: " + std::to_string(found.size()) + " of " + std::to_string(count) +
                     " peers named '" + std::string(prefix) + "*' within " + std::to_string(timeout.count()) + " ms");
    // Peer events wake us early; the slice bounds the wait if another thread took them.
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(deadline - now,
                                                                              std::chrono::milliseconds(20)));
  }
}

Result<DescriptorList> Agent::Impl::remote_named_regions(std::string_view peer, std::string_view name) const {
  std::lock_guard lock(peers_mu_);
  auto it = peers_.find(peer);
  if (it == peers_.end()) return NotFound("unknown peer '" + std::string(peer) + "'");
  const auto& names = it->second.metadata.region_names;
  std::vector<const detail::RegionInfo*> found;
  for (const auto& r : it->second.regions) {
    auto n = names.find(r.id);
    if (n != names.end() && n->second == name) found.push_back(&r);
  }
  if (found.empty())
    return NotFound("peer '" + std::string(peer) + "' announced no regions named '" + std::string(name) + "'");
  // Registration order (ids grow with it), so a list registered under a name comes back
  // in the order it was given.
  std::sort(found.begin(), found.end(), [](auto* a, auto* b) { return a->id < b->id; });
  DescriptorList out(found.front()->kind);
  for (const auto* r : found) {
    if (r->kind != out.kind())
      return Corrupt("peer '" + std::string(peer) + "' announced regions named '" + std::string(name) +
                     "' of two memory kinds");
    out.add(r->address, r->length, r->device);
  }
  return out;
}

Result<std::vector<std::string>> Agent::Impl::remote_region_names(std::string_view peer) const {
  std::lock_guard lock(peers_mu_);
  auto it = peers_.find(peer);
  if (it == peers_.end()) return NotFound("unknown peer '" + std::string(peer) + "'");
  std::vector<std::string> out;
  for (const auto& [id, name] : it->second.metadata.region_names) out.push_back(name);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string Agent::Impl::metrics_text() const {
  detail::AgentGauges g;
  {
    std::lock_guard lock(peers_mu_);
    g.peers_by_state = {{"known", 0}, {"connected", 0}, {"lost", 0}};
    for (const auto& [name, entry] : peers_) {
      if (is_self(name)) continue;
      const char* state = "known";
      for (const auto& [key, conn] : entry.connections) {
        if (!conn->health().ok()) {
          state = "lost";
          break;
        }
        state = "connected";
      }
      ++g.peers_by_state[state];
    }
  }
  for (const auto& r : registry_->snapshot()) {
    g.registered_bytes[std::string(to_string(r.kind))] += r.length;
    ++g.registered_regions[std::string(to_string(r.kind))];
  }
  g.inbox_depth = inbox_->size();
  g.notifications_dropped = inbox_->refused();
  g.metadata_revision = revision_.load();
  if (std::shared_lock life(life_mu_); reactor_) {  // reset by shutdown
    const auto r = reactor_->stats();
    g.reactor_runs = r.runs;
    g.reactor_slow = r.slow;
    g.reactor_longest_seconds = std::chrono::duration<double>(r.longest).count();
  }
  {
    std::lock_guard lock(service_mu_);
    if (service_) {
      g.service = true;
      g.service_healthy = service_->healthy();
      auto t = service_->traffic();
      g.service_sent = t->sent.load();
      g.service_received = t->received.load();
      g.service_requests = t->requests.load();
      g.service_warnings = service_warnings_.load();
    }
  }
  return metrics_->render(g);
}

Status Agent::Impl::sync_metadata(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::shared_ptr<detail::MetadataService> service;
  {
    std::lock_guard lock(service_mu_);
    service = service_;
  }
  if (!service) return Status::Ok();
  return service->wait_published(deadline);
}

Result<std::uint16_t> Agent::Impl::metrics_port() const {
  if (!metrics_server_) return NotFound("this agent serves no metrics (AgentOptions::metrics_address is empty)");
  return metrics_server_->port();
}

}  // namespace kvferry
