#include <algorithm>
#include <optional>
#include <tuple>

#include "core/agent_impl.h"
#include "core/byte_io.h"
#include "core/notification_wire.h"

namespace kvferry {

namespace {
bool region_less(const detail::RegionInfo& a, const detail::RegionInfo& b) {
  return std::tie(a.kind, a.device, a.address) < std::tie(b.kind, b.device, b.address);
}
}  // namespace

Result<std::string> Agent::Impl::load_remote(std::span<const std::uint8_t> metadata) {
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  KVF_ASSIGN_OR_RETURN(detail::AgentMetadata md, detail::decode_metadata(metadata));
  if (md.name == options_.name)
    return InvalidArgument("load_remote: the metadata names this agent itself ('" + md.name + "')");
  return install_peer(std::move(md), /*authoritative=*/false);
}

namespace {

bool same_regions(const std::vector<detail::RegionInfo>& a, const std::vector<detail::RegionInfo>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const auto& x, const auto& y) {
    return x.id == y.id && x.kind == y.kind && x.device == y.device && x.address == y.address && x.length == y.length;
  });
}

// Connections of old announcements kept for the transfers made on them; beyond this
// many, the oldest go (their requests fail on their next post, never in flight).
constexpr std::size_t kMaxRetiredConnections = 16;
// Departed peers remembered for the error of a later call to them.
constexpr std::size_t kMaxDeparted = 1024;
// Probes of pushed instances (load_pushed): in flight at once, and pushes waiting on one.
constexpr std::size_t kMaxProbesInFlight = 8;
constexpr std::size_t kMaxProbeWaiters = 64;

}  // namespace

Result<std::string> Agent::Impl::install_peer(detail::AgentMetadata md, bool authoritative, const Judge& judge) {
  std::string name = md.name;
  const detail::InstanceId incoming = md.instance;
  std::vector<detail::RegionInfo> regions = md.regions;
  std::sort(regions.begin(), regions.end(), region_less);
  // A replaced instance (failing its transfers) and dropped connections are destroyed
  // outside the lock; on the reactor thread (a side-channel push) by the closer, since
  // closing a connection may join threads and wait for copies in flight.
  struct Leftovers {
    PeerEntry old;
    std::vector<std::shared_ptr<detail::BackendConnection>> dropped;
  };
  struct HandOff {
    Agent::Impl* self;
    std::shared_ptr<Leftovers> left;  // the only reference
    ~HandOff() {
      if (left->old.metadata.name.empty() && left->dropped.empty()) return;
      if (self->reactor_ && self->reactor_->in_reactor_thread()) self->closer_.hand(std::move(left));
    }
  } hand_off{this, std::make_shared<Leftovers>()};
  PeerEntry& old = hand_off.left->old;
  std::vector<std::shared_ptr<detail::BackendConnection>>& dropped = hand_off.left->dropped;
  PeerEvent event{PeerEventKind::kJoined, name, md.revision};
  // Another instance under a loaded name is judged outside the lock (it may probe the old
  // instance); the entry must still be that old instance when it is replaced.
  std::optional<detail::InstanceId> judged;
  for (int attempt = 0; attempt < 3; ++attempt) {
    detail::AgentMetadata seen;
    std::vector<std::shared_ptr<detail::BackendConnection>> seen_connections;
    bool done = false;
    {
      std::lock_guard lock(peers_mu_);
      auto it = peers_.find(name);
      if (it != peers_.end()) {
        PeerEntry& e = it->second;
        if (e.metadata.instance == incoming) {
          KVF_RETURN_IF_ERROR(same_reachability(e.metadata, md));
          // Loading a peer again after one of its connections was lost connects afresh
          // (a lost connection stays lost until the peer is loaded again), whatever the
          // revision says.
          for (auto c = e.connections.begin(); c != e.connections.end();) {
            if (c->second && !c->second->health().ok()) {
              dropped.push_back(std::move(c->second));
              c = e.connections.erase(c);
            } else {
              ++c;
            }
          }
          // Out of order or repeated (a watch and a side-channel push of one change):
          // keep what we have. Revision 0 is a peer that counts none: always apply.
          if (md.revision != 0 && md.revision <= e.metadata.revision) return name;
          // An update in place: transfers in flight keep their connections; those that
          // learned the old regions are retired, and new transfers connect afresh.
          if (!same_regions(e.regions, regions)) {
            for (auto& [key, conn] : e.connections) e.retired.push_back(std::move(conn));
            e.connections.clear();
            while (e.retired.size() > kMaxRetiredConnections) {
              dropped.push_back(std::move(e.retired.front()));
              e.retired.erase(e.retired.begin());
            }
          }
          e.regions = std::move(regions);
          e.metadata = std::move(md);
          event.kind = PeerEventKind::kUpdated;
          done = true;
        } else if (!authoritative && (!judged || *judged != e.metadata.instance)) {
          seen = e.metadata;
          for (const auto& [key, c] : e.connections) seen_connections.push_back(c);
        }
      }
      if (!done && seen.name.empty()) {
        PeerEntry entry;
        entry.regions = std::move(regions);
        entry.metadata = std::move(md);
        entry.generation = next_generation_++;
        if (it != peers_.end()) {
          old = std::move(it->second);
          event.kind = PeerEventKind::kRestarted;
        }
        peers_[name] = std::move(entry);
        departed_.erase(name);
        done = true;
      }
    }
    if (done) {
      metrics_->count_peer_event(to_string(event.kind));
      events_.push(std::move(event));
      return name;
    }
    KVF_RETURN_IF_ERROR(judge ? judge(seen, seen_connections, incoming) : may_replace(seen, seen_connections, incoming));
    judged = seen.instance;
  }
  return Unavailable("load_remote: peer '" + name + "' kept changing while its metadata was being loaded");
}

std::shared_ptr<detail::TransferCounters> Agent::Impl::counters_of(PeerEntry& entry, const std::string& key) {
  auto& slot = entry.counters[key];
  if (!slot) slot = metrics_->counters(key, entry.metadata.name);
  return slot;
}

void Agent::Impl::remove_peer(const std::string& name, const std::string& why) {
  PeerEntry old;
  {
    std::lock_guard lock(peers_mu_);
    auto it = peers_.find(name);
    if (it == peers_.end()) return;
    old = std::move(it->second);
    peers_.erase(it);
    if (departed_.size() >= kMaxDeparted) departed_.erase(departed_.begin());
    departed_[name] = why;
  }
  metrics_->count_peer_event(to_string(PeerEventKind::kLeft));
  events_.push(PeerEvent{PeerEventKind::kLeft, name, 0});
}

Status Agent::Impl::forget_remote(std::string_view peer) {
  std::shared_lock life(life_mu_);
  if (is_self(peer)) return InvalidArgument("forget_remote: '" + std::string(peer) + "' is this agent itself");
  {
    std::lock_guard lock(peers_mu_);
    if (peers_.find(peer) == peers_.end())
      return NotFound("forget_remote: unknown peer '" + std::string(peer) + "'");
  }
  remove_peer(std::string(peer), "forgotten");
  return Status::Ok();
}

std::vector<std::string> Agent::Impl::remote_agents() const {
  std::lock_guard lock(peers_mu_);
  std::vector<std::string> out;
  for (const auto& [name, entry] : peers_)
    if (!is_self(name)) out.push_back(name);
  return out;
}

Result<std::vector<DescriptorList>> Agent::Impl::remote_regions(std::string_view peer) const {
  std::lock_guard lock(peers_mu_);
  auto it = peers_.find(peer);
  if (it == peers_.end()) return NotFound("unknown peer '" + std::string(peer) + "'");
  std::vector<DescriptorList> out;
  for (const auto& r : it->second.regions) {  // sorted by kind: one list per kind
    if (out.empty() || out.back().kind() != r.kind) out.emplace_back(r.kind);
    out.back().add(r.address, r.length, r.device);
  }
  return out;
}

Result<std::vector<std::uint8_t>> Agent::Impl::remote_metadata_entry(std::string_view peer,
                                                                     std::string_view key) const {
  std::lock_guard lock(peers_mu_);
  auto it = peers_.find(peer);
  if (it == peers_.end()) return NotFound("unknown peer '" + std::string(peer) + "'");
  auto e = it->second.metadata.entries.find(std::string(key));
  if (e == it->second.metadata.entries.end())
    return NotFound("peer '" + std::string(peer) + "' published no metadata entry '" + std::string(key) + "'");
  return e->second;
}

Result<std::uint16_t> Agent::Impl::listen(const std::string& address, std::uint16_t port) {
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  std::lock_guard lock(side_mu_);
  if (side_channel_) return AlreadyExists("listen: this agent already listens on port " +
                                          std::to_string(side_channel_->port()));
  detail::SideChannelHandlers handlers;
  // The server is stopped before `this` goes away (shutdown), so raw `this` is safe. Its
  // handlers run on the agent's reactor.
  handlers.local_metadata = [this] { return local_metadata(); };
  handlers.load_remote = [this](std::span<const std::uint8_t> md, detail::SideChannelHandlers::Later later) {
    return load_pushed(md, std::move(later));
  };
  // Coalesced and capped: a flood of pushes naming loaded peers starts few probes.
  probes_ = std::make_unique<detail::PeerProbes>(reactor_, secret_, kMaxProbesInFlight, kMaxProbeWaiters);
  handlers.notify = [this](std::string from, std::string envelope) { return inbox_->deliver(std::move(from), envelope); };
  KVF_ASSIGN_OR_RETURN(side_channel_,
                       detail::SideChannelServer::start(address, port, std::move(handlers), options_.peer_timeout, secret_,
                                                        reactor_));
  side_address_ = detail::SideChannelAddress{address, side_channel_->port()};
  // The metadata now names a side channel: a new revision, so peers that loaded the old
  // blob take this one as an update rather than as a repeat.
  revision_.fetch_add(1);
  return side_channel_->port();
}

Result<std::string> Agent::Impl::fetch_remote(const std::string& host, std::uint16_t port, bool push_local,
                                              std::chrono::milliseconds timeout) {
  std::vector<std::uint8_t> ours;
  if (push_local) {
    KVF_ASSIGN_OR_RETURN(ours, local_metadata());
  }
  KVF_ASSIGN_OR_RETURN(auto theirs, detail::side_channel_call(host, port, detail::SideFrame::kFetch, ours,
                                                              detail::SideFrame::kMetadata,
                                                              detail::deadline_after(timeout), secret_));
  return load_remote(theirs);
}

Result<Agent::Impl::Route> Agent::Impl::route(std::string_view peer, MemoryKind local_kind, MemoryKind remote_kind,
                                              std::uint64_t bytes, std::uint64_t descriptors,
                                              const std::string& forced_backend) {
  struct Candidate {
    detail::Backend* backend;
    double cost;
    detail::PeerEndpoint endpoint;
    bool staged;  // local vram through pinned host memory (core/staged_connection.h)
    std::string key() const { return std::string(backend->name()) + (staged ? "+staging" : ""); }
  };
  // Local vram can ride any backend that moves host memory, staged through pinned
  // buffers, when this process can drive a GPU.
  std::shared_ptr<detail::DeviceStager> stager;
  std::string no_stager;
  if (local_kind == MemoryKind::kVram) {
    auto s = detail::DeviceStager::instance();
    if (s.ok()) stager = *s;
    else no_stager = s.status().message();
  }
  std::vector<Candidate> candidates;
  std::string reasons;
  std::uint64_t generation = 0;
  {
    std::lock_guard lock(peers_mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end()) {
      if (auto d = departed_.find(peer); d != departed_.end())
        return PeerLost("peer '" + std::string(peer) + "' " + d->second);
      return NotFound("unknown peer '" + std::string(peer) + "' (load its metadata first)");
    }
    const auto& md = it->second.metadata;
    generation = it->second.generation;
    for (const auto& b : backends_) {
      std::string bname(b->name());
      if (!forced_backend.empty() && bname != forced_backend) continue;
      auto why_not = [&](const std::string& why) { reasons += "; " + bname + ": " + why; };
      auto caps = b->capabilities();
      auto theirs = std::find_if(md.backends.begin(), md.backends.end(),
                                 [&](const detail::BackendEntry& e) { return e.name == bname; });
      bool staged = false;
      if (!caps.local_kinds.contains(local_kind)) {
        if (local_kind != MemoryKind::kVram || !caps.local_kinds.contains(MemoryKind::kDram)) {
          why_not("no local " + std::string(to_string(local_kind)));
          continue;
        }
        if (!stager) {
          why_not("no local vram, and it cannot be staged: " + no_stager);
          continue;
        }
        staged = true;
      }
      if (!caps.remote_kinds.contains(remote_kind)) { why_not("no remote " + std::string(to_string(remote_kind))); continue; }
      if (theirs == md.backends.end()) { why_not("the peer does not run it"); continue; }
      if (caps.same_process_only && md.process_id != process_id_) { why_not("peer is in another process"); continue; }
      if (caps.same_host_only && md.host_id != host_id_) { why_not("peer is on another host"); continue; }
      auto conn = it->second.connections.find(bname);
      if (conn != it->second.connections.end()) {
        if (Status h = conn->second->health(); !h.ok()) {
          // A lost peer stays lost until its metadata is loaded again: fail fast.
          return h.with_context("peer '" + std::string(peer) + "'");
        }
      }
      double cost = b->cost_model().estimate_us(bytes, descriptors);
      // Staging adds the GPU copies; they overlap with the transfer, so charge the PCIe
      // time (about 50 GB/s) only where it exceeds the backend's own.
      if (staged) cost = std::max(cost, static_cast<double>(bytes) / (50.0 * 1e3)) + 20.0;
      candidates.push_back(Candidate{b.get(), cost,
                                     detail::PeerEndpoint{md.name, md.host_id, md.process_id, theirs->info,
                                                          it->second.regions},
                                     staged});
    }
    std::stable_sort(candidates.begin(), candidates.end(),
                     [](const Candidate& a, const Candidate& b) { return a.cost < b.cost; });
    if (!candidates.empty()) {
      auto conn = it->second.connections.find(candidates.front().key());
      if (conn != it->second.connections.end())
        return Route{conn->second, candidates.front().key(), generation, counters_of(it->second, candidates.front().key())};
    }
  }
  // Connect outside the lock (bounded by connect_timeout); the cheapest backend that
  // connects wins, so a same-host path that the system forbids falls back to the next.
  for (const Candidate& c : candidates) {
    const std::string bname(c.backend->name());
    std::shared_ptr<detail::BackendConnection> base;
    {
      std::lock_guard lock(peers_mu_);
      auto it = peers_.find(peer);
      if (it == peers_.end() || it->second.generation != generation)
        return NotFound("peer '" + std::string(peer) + "' was forgotten or reloaded while connecting");
      auto conn = it->second.connections.find(c.key());
      if (conn != it->second.connections.end() && conn->second->health().ok())
        return Route{conn->second, c.key(), generation, counters_of(it->second, c.key())};
      conn = it->second.connections.find(bname);
      if (conn != it->second.connections.end() && conn->second->health().ok()) base = conn->second;
    }
    if (!base) {
      auto fresh = c.backend->connect(c.endpoint);
      if (!fresh.ok()) {
        reasons += "; " + bname + ": " + fresh.status().message();
        continue;
      }
      base = std::move(fresh).value();
      if (fault_.applies_to(bname))
        base = std::make_shared<detail::FaultConnection>(std::move(base), fault_, options_.peer_timeout);
    }
    std::lock_guard lock(peers_mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end() || it->second.generation != generation)
      return NotFound("peer '" + std::string(peer) + "' was forgotten or reloaded while connecting");
    // Another thread may have connected meanwhile: the first healthy connection wins,
    // so requests already bound to it stay valid.
    auto [slot, inserted] = it->second.connections.try_emplace(bname, base);
    if (!inserted && !slot->second->health().ok()) slot->second = base;
    if (!c.staged) return Route{slot->second, bname, generation, counters_of(it->second, bname)};
    auto [staged, fresh_staged] = it->second.connections.try_emplace(c.key(), nullptr);
    if (fresh_staged || !staged->second->health().ok())
      staged->second = std::make_shared<detail::StagedConnection>(slot->second, stager, staging_);
    return Route{staged->second, c.key(), generation, counters_of(it->second, c.key())};
  }
  if (!forced_backend.empty() && reasons.empty()) reasons = "; backend '" + forced_backend + "' is not started";
  return Unavailable("no backend can move " + std::string(to_string(local_kind)) + " <-> " +
                     std::string(to_string(remote_kind)) + " with peer '" + std::string(peer) + "'" + reasons);
}

Status Agent::Impl::notify(std::string_view peer, std::string_view message, std::uint64_t tag) {
  std::shared_lock life(life_mu_);
  if (closed_) return FailedPrecondition("agent is shut down");
  if (message.size() > options_.max_notification_bytes)
    return InvalidArgument("notify: message of " + std::to_string(message.size()) + " bytes exceeds the " +
                           std::to_string(options_.max_notification_bytes) + "-byte cap");
  // Prefer a backend link (ordered with its transfers), whatever memory kind it serves
  // (a cuda_ipc-only agent has no dram link); else the peer's side channel.
  auto r = route(peer, MemoryKind::kDram, MemoryKind::kDram, message.size(), 1, "");
  for (int k = 1; k < kMemoryKindCount && !r.ok() && r.status().code() != StatusCode::kPeerLost; ++k) {
    const auto kind = static_cast<MemoryKind>(k);
    auto other = route(peer, kind, kind, message.size(), 1, "");
    if (other.ok() || other.status().code() == StatusCode::kPeerLost) r = std::move(other);
  }
  const std::string envelope = detail::encode_notification(tag, message);
  if (r.ok()) return r->connection->notify(envelope).with_context("notify '" + std::string(peer) + "'");
  std::optional<detail::SideChannelAddress> side;
  {
    std::lock_guard lock(peers_mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end()) return r.status();
    side = it->second.metadata.side_channel;
  }
  if (!side) return r.status();
  detail::ByteWriter w;
  w.u16(static_cast<std::uint16_t>(options_.name.size()));
  w.str(options_.name);
  w.str(envelope);
  auto reply = detail::side_channel_call(side->host, side->port, detail::SideFrame::kNotify, w.buffer(),
                                         detail::SideFrame::kOk, detail::deadline_after(options_.connect_timeout), secret_);
  return reply.status();
}

}  // namespace kvferry
