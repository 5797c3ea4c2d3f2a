#include "core/agent_impl.h"

#include <algorithm>

#include "core/backend_registry.h"
#include "core/backend_settings.h"
#include "core/host_identity.h"
#include "core/notification_wire.h"

namespace kvferry {

using detail::BackendRegistry;

Result<std::shared_ptr<Agent::Impl>> Agent::Impl::create(AgentOptions options) {
  KVF_RETURN_IF_ERROR(detail::validate_agent_name(options.name));
  if (options.peer_timeout.count() <= 0) return InvalidArgument("peer_timeout must be positive");
  if (options.connect_timeout.count() <= 0) return InvalidArgument("connect_timeout must be positive");
  if (options.max_inbox_notifications == 0) return InvalidArgument("max_inbox_notifications must be positive");
  if (options.max_notification_bytes > detail::kMaxNotificationMessageBytes)
    return InvalidArgument("max_notification_bytes " + std::to_string(options.max_notification_bytes) +
                           " exceeds the largest notification any backend carries (" +
                           std::to_string(detail::kMaxNotificationMessageBytes) + ")");
  std::shared_ptr<Impl> impl(new Impl());
  if (!options.secret.empty()) {
    KVF_ASSIGN_OR_RETURN(impl->secret_, detail::SharedSecret::create(options.secret));
    std::fill(options.secret.begin(), options.secret.end(), std::uint8_t{0});  // kept once, in secret_
    options.secret.clear();
  }
  impl->options_ = std::move(options);
  impl->instance_ = detail::random_instance_id();
  impl->registry_ = std::make_shared<detail::MemoryRegistry>((impl->instance_.lo >> 2) | 1);
  detail::mark_instance_alive(impl->instance_);
  impl->host_id_ = detail::host_id();
  impl->process_id_ = detail::process_id();
  impl->inbox_ = std::make_shared<detail::NotificationInbox>(
      impl->options_.name, impl->options_.max_inbox_notifications, impl->options_.max_notification_bytes);
  KVF_RETURN_IF_ERROR(impl->start_backends());
  impl->refresh_self_entry();
  KVF_RETURN_IF_ERROR(impl->start_cluster_services());
  return impl;
}

void Agent::Impl::refresh_self_entry() {
  std::vector<detail::RegionInfo> regions = registry_->snapshot();  // sorted by kind, device, address
  std::map<std::string, std::vector<std::uint8_t>> entries;
  std::map<std::uint64_t, std::string> names;
  {
    std::lock_guard lock(entries_mu_);
    entries = entries_;
    names = region_names_;
  }
  revision_.fetch_add(1);  // after the change: a blob never claims a revision it lacks
  publish_change();
  std::lock_guard lock(peers_mu_);
  auto [it, fresh] = peers_.try_emplace(options_.name);
  PeerEntry& self = it->second;
  if (fresh) {
    self.generation = next_generation_++;
    self.metadata.name = options_.name;
    self.metadata.instance = instance_;
    self.metadata.host_id = host_id_;
    self.metadata.process_id = process_id_;
    for (const auto& b : backends_) self.metadata.backends.push_back({std::string(b->name()), b->connection_info()});
  }
  self.regions = std::move(regions);
  self.metadata.entries = std::move(entries);
  self.metadata.region_names = std::move(names);
}

Status Agent::Impl::start_backends() {
  const BackendRegistry& registry = BackendRegistry::builtin();
  // Settings are "<backend>.<key>"; reject what no backend accepts, naming it.
  KVF_RETURN_IF_ERROR(parse_staging_settings());
  std::map<std::string, std::string> fault_settings;
  for (const auto& [key, value] : options_.backend_params)
    if (key.rfind("fault.", 0) == 0) fault_settings[key.substr(6)] = value;
  KVF_ASSIGN_OR_RETURN(fault_, detail::parse_fault_settings(fault_settings));
  for (const auto& [key, value] : options_.backend_params) {
    if (key.rfind("staging.", 0) == 0 || key.rfind("fault.", 0) == 0) continue;  // the core's own
    auto dot = key.find('.');
    const detail::BackendFactory* f = dot == std::string::npos ? nullptr : registry.find(key.substr(0, dot));
    if (!f) return InvalidArgument("backend setting '" + key + "' names no compiled-in backend");
    std::string sub = key.substr(dot + 1);
    if (std::find(f->param_keys.begin(), f->param_keys.end(), sub) == f->param_keys.end()) {
      std::string known;
      for (const auto& k : f->param_keys) known += (known.empty() ? "" : ", ") + k;
      return InvalidArgument("backend setting '" + key + "' is unknown (" + f->name + " accepts: " + known + ")");
    }
  }
  KVF_ASSIGN_OR_RETURN(reactor_, detail::Reactor::start("kvf-reactor"));
  for (const auto& wanted : options_.backends) {
    if (!registry.find(wanted)) return NotFound("backend '" + wanted + "' is not compiled into this build");
  }
  for (const auto& f : registry.factories()) {
    bool requested = std::find(options_.backends.begin(), options_.backends.end(), f.name) != options_.backends.end();
    if (!options_.backends.empty() && !requested) continue;
    if (Status s = f.probe ? f.probe() : Status::Ok(); !s.ok()) {
      if (requested) return s.with_context("backend '" + f.name + "' is not usable here");
      continue;
    }
    detail::BackendContext ctx;
    ctx.agent_name = options_.name;
    ctx.secret = secret_;
    ctx.reactor = reactor_;
    ctx.host_id = host_id_;
    ctx.process_id = process_id_;
    ctx.peer_timeout = options_.peer_timeout;
    ctx.connect_timeout = options_.connect_timeout;
    // Backends carry any envelope up to the wire cap; the inbox applies this agent's own
    // cap and refuses (telling the sender) rather than dropping the link.
    ctx.max_notification_bytes = detail::kMaxNotificationWireBytes;
    for (const auto& [key, value] : options_.backend_params)
      if (key.rfind(f.name + ".", 0) == 0) ctx.params[key.substr(f.name.size() + 1)] = value;
    ctx.deliver_notification = [inbox = inbox_](std::string from, std::string envelope) {
      return inbox->deliver(std::move(from), envelope);
    };
    auto backend = f.create(ctx);
    if (!backend.ok()) return backend.status().with_context("starting backend '" + f.name + "'");
    // With a secret, a backend that reaches other processes must authenticate its
    // handshakes (Capabilities::authenticates); one that does not yet is not started.
    const auto caps = (*backend)->capabilities();
    if (secret_ && !caps.same_process_only && !caps.authenticates) {
      if (requested)
        return NotSupported("backend '" + f.name +
                            "' does not authenticate its handshakes yet; it cannot be used with AgentOptions::secret");
      continue;
    }
    backends_.push_back(std::move(backend).value());
  }
  if (backends_.empty()) return Unavailable("no usable backend could be started");
  return Status::Ok();
}

Status Agent::Impl::parse_staging_settings() {
  std::map<std::string, std::string> mine;
  for (const auto& [key, value] : options_.backend_params)
    if (key.rfind("staging.", 0) == 0) mine[key.substr(8)] = value;
  for (const auto& [key, value] : mine)
    if (key != "chunk_bytes" && key != "slots" && key != "copy")
      return InvalidArgument("setting 'staging." + key + "' is unknown (staging accepts: chunk_bytes, slots, copy)");
  KVF_ASSIGN_OR_RETURN(staging_.chunk_bytes,
                       detail::integer_setting(mine, "staging", "chunk_bytes", 64u << 10, 1u << 30, 8u << 20));
  KVF_ASSIGN_OR_RETURN(std::uint64_t slots, detail::integer_setting(mine, "staging", "slots", 1, 64, 8));
  staging_.slots = static_cast<std::uint32_t>(slots);
  if (auto it = mine.find("copy"); it != mine.end()) {
    KVF_ASSIGN_OR_RETURN(staging_.method, detail::parse_stage_method(it->second));
  }
  staging_.drain_timeout = std::max(options_.peer_timeout, std::chrono::milliseconds(1000));
  return Status::Ok();
}

Agent::Impl::~Impl() { shutdown(); }

void Agent::Impl::shutdown() {
  // The metadata service and the metrics endpoint call into us: stop them first (this
  // leaves the namespace at once: the lease is revoked).
  std::shared_ptr<detail::MetadataService> service;
  {
    std::lock_guard lock(service_mu_);
    service = std::move(service_);
  }
  if (service) service->stop();  // a thread in sync_metadata may hold it a moment longer
  metrics_server_.reset();
  // The side channel calls into us; stop it before taking the exclusive lock.
  std::unique_ptr<detail::SideChannelServer> side;
  {
    std::lock_guard lock(side_mu_);
    side = std::move(side_channel_);
  }
  side.reset();
  // Then the probes of pushes (their completions call into us and take life_mu_): no
  // handler of the side channel runs now to start one. Stopped on the reactor, whose
  // thread they live on; after this none runs.
  std::unique_ptr<detail::PeerProbes> probes;
  {
    std::lock_guard lock(side_mu_);
    probes = std::move(probes_);
  }
  if (probes) reactor_->run_sync([&] { probes->stop(); });
  closer_.stop();  // what pushes replaced is closed before the backends go
  probes.reset();
  std::unique_lock life(life_mu_);
  if (closed_) return;
  closed_ = true;
  detail::mark_instance_gone(instance_);
  {
    std::lock_guard lock(peers_mu_);
    peers_.clear();  // destroying connections fails their jobs
  }
  backends_.clear();
  reactor_.reset();  // the last owner stops its thread
}

std::vector<std::string> Agent::Impl::backend_names() const {
  std::shared_lock life(life_mu_);
  std::vector<std::string> out;
  for (const auto& b : backends_) out.emplace_back(b->name());
  return out;
}

Status Agent::Impl::register_memory(const DescriptorList& regions, std::string_view name) {
  if (!name.empty()) KVF_RETURN_IF_ERROR(detail::validate_region_name(name).with_context("register_memory"));
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  std::lock_guard reg(registration_mu_);
  if (!name.empty()) {
    // One name, one memory kind: a peer gets one descriptor list back for it.
    std::lock_guard lock(entries_mu_);
    for (const auto& r : registry_->snapshot()) {
      auto n = region_names_.find(r.id);
      if (n != region_names_.end() && n->second == name && r.kind != regions.kind())
        return InvalidArgument("register_memory: the name '" + std::string(name) + "' already names " +
                               std::string(to_string(r.kind)) + " regions, not " +
                               std::string(to_string(regions.kind())));
    }
  }
  KVF_ASSIGN_OR_RETURN(auto planned, registry_->plan_add(regions));
  // Where this process drives GPUs, the core checks every vram region itself, so the
  // error does not depend on which backends run (else the backends check), and vram
  // needs no backend of its own: the core can stage it over any host backend.
  bool stageable = false;
  if (regions.kind() == MemoryKind::kVram) {
    if (auto stager = detail::DeviceStager::instance(); stager.ok()) {
      stageable = true;
      for (const auto& r : planned)
        KVF_RETURN_IF_ERROR((*stager)->check_vram(r.address, r.length, static_cast<int>(r.device))
                                .with_context("register_memory"));
    }
  }
  attach_share_fds(planned);
  std::vector<detail::Backend*> takers;
  for (const auto& b : backends_)
    if (b->capabilities().serves(regions.kind())) takers.push_back(b.get());
  if (takers.empty() && !stageable)
    return NotSupported("register_memory: no started backend supports " + std::string(to_string(regions.kind())) +
                        " memory");
  // All backends take every region, or none does.
  for (std::size_t bi = 0; bi < takers.size(); ++bi) {
    for (std::size_t ri = 0; ri < planned.size(); ++ri) {
      Status s = takers[bi]->register_region(planned[ri]);
      if (s.ok()) continue;
      for (std::size_t rj = 0; rj < ri; ++rj) takers[bi]->deregister_region(planned[rj].id).ok();
      for (std::size_t bj = 0; bj < bi; ++bj)
        for (const auto& r : planned) takers[bj]->deregister_region(r.id).ok();
      return s.with_context("register_memory: backend '" + std::string(takers[bi]->name()) + "'");
    }
  }
  registry_->commit_add(planned);
  if (!name.empty()) {
    std::lock_guard lock(entries_mu_);
    for (const auto& r : planned) region_names_[r.id] = std::string(name);
  }
  refresh_self_entry();
  return Status::Ok();
}

Status Agent::Impl::deregister_memory(const DescriptorList& regions) {
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  std::lock_guard reg(registration_mu_);
  KVF_ASSIGN_OR_RETURN(auto removed, registry_->remove(regions));
  {
    std::lock_guard lock(entries_mu_);
    for (const auto& r : removed) region_names_.erase(r.id);
  }
  refresh_self_entry();
  Status first;
  for (const auto& b : backends_) {
    if (!b->capabilities().serves(regions.kind())) continue;
    for (const auto& r : removed) {
      Status s = b->deregister_region(r.id);
      if (!s.ok() && first.ok()) first = s.with_context("deregister_memory: backend '" + std::string(b->name()) + "'");
    }
  }
  return first;
}

Result<std::vector<std::uint8_t>> Agent::Impl::local_metadata() const {
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  detail::AgentMetadata md;
  md.revision = revision_.load();  // first: the state read below is at least this new
  md.name = options_.name;
  md.instance = instance_;
  md.host_id = host_id_;
  md.process_id = process_id_;
  {
    std::lock_guard lock(side_mu_);
    md.side_channel = side_address_;
  }
  for (const auto& b : backends_) md.backends.push_back({std::string(b->name()), b->connection_info()});
  md.regions = registry_->snapshot();
  {
    std::lock_guard lock(entries_mu_);
    md.entries = entries_;
    md.region_names = region_names_;
  }
  return detail::encode_metadata(md);
}

}  // namespace kvferry

namespace kvferry {

Status Agent::Impl::set_metadata_entry(std::string_view key, std::span<const std::uint8_t> value) {
  KVF_RETURN_IF_ERROR(detail::validate_entry_key(key));
  if (value.size() > detail::kMaxEntryValueBytes)
    return InvalidArgument("metadata entry '" + std::string(key) + "': value of " + std::to_string(value.size()) +
                           " bytes exceeds the 64 KiB cap");
  {
    std::lock_guard lock(entries_mu_);
    if (entries_.size() >= detail::kMaxEntries && !entries_.count(std::string(key)))
      return InvalidArgument("metadata entries: at most " + std::to_string(detail::kMaxEntries));
    entries_[std::string(key)].assign(value.begin(), value.end());
  }
  refresh_self_entry();
  return Status::Ok();
}

}  // namespace kvferry

namespace kvferry {

Result<std::shared_ptr<detail::SharedSegment>> Agent::Impl::allocate_shared_segment(std::size_t bytes) {
  KVF_ASSIGN_OR_RETURN(auto segment, detail::SharedSegment::allocate(bytes, options_.name));
  std::lock_guard lock(shared_mu_);
  std::erase_if(shared_segments_, [](const auto& kv) { return kv.second.expired(); });
  shared_segments_[reinterpret_cast<std::uint64_t>(segment->base())] = segment;
  return segment;
}

void Agent::Impl::attach_share_fds(std::vector<detail::RegionInfo>& regions) {
  std::lock_guard lock(shared_mu_);
  for (auto& r : regions) {
    if (r.kind != MemoryKind::kDram) continue;
    auto it = shared_segments_.upper_bound(r.address);
    if (it == shared_segments_.begin()) continue;
    auto segment = std::prev(it)->second.lock();
    if (!segment || !segment->contains(r.address, r.length)) continue;
    r.share_fd = segment->fd();
    r.share_offset = r.address - reinterpret_cast<std::uint64_t>(segment->base());
  }
}

}  // namespace kvferry
