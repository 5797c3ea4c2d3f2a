// Agent::Impl: the agent's state. Split by concern across agent_*.cc:
//   agent_impl.cc       creation, backends, registration, metadata, shutdown
//   agent_peers.cc      remote agents, backend selection, connections, side channel
//   agent_transfers.cc  prepared lists and transfer creation
//   agent_cluster.cc    metadata service, peer events, named regions, metrics
//   agent_lanes.cc      prepared lanes and strided transfers (lanes x block ids)
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "cluster/metadata_service.h"
#include "cluster/metrics.h"
#include "cluster/metrics_server.h"
#include "cluster/peer_event_queue.h"
#include "core/backend.h"
#include "core/closer.h"
#include "core/fault_connection.h"
#include "core/instance_id.h"
#include "core/local_file.h"
#include "core/memory_registry.h"
#include "core/metadata.h"
#include "core/notification_inbox.h"
#include "core/peer_auth.h"
#include "core/prepared_data.h"
#include "core/reactor.h"
#include "core/shared_segment.h"
#include "core/side_channel.h"
#include "core/side_channel_probe.h"
#include "core/staged_connection.h"
#include "kvferry/agent.h"

namespace kvferry {

class Agent::Impl {
 public:
  // What create_transfer built, in either form (explicit merged pieces or strided).
  struct RequestParts {
    std::shared_ptr<const detail::PieceList> pieces;
    std::vector<std::uint64_t> local_region_ids;  // distinct regions to pin per post
    std::uint64_t total_bytes = 0;
    std::uint64_t requested = 0;  // pairs as the caller described them
  };
  static Result<std::shared_ptr<Impl>> create(AgentOptions options);
  ~Impl();
  // Stops the side channel, then the backends (failing their jobs). Idempotent.
  void shutdown();

  const std::string& name() const { return options_.name; }
  const detail::InstanceId& instance() const { return instance_; }
  std::vector<std::string> backend_names() const;

  Status register_memory(const DescriptorList& regions, std::string_view name = {});
  Result<std::shared_ptr<detail::SharedSegment>> allocate_shared_segment(std::size_t bytes);
  Status deregister_memory(const DescriptorList& regions);
  Result<std::vector<std::uint8_t>> local_metadata() const;
  // Files (agent_files.cc).
  Result<FileRegistration> register_file(const std::string& path, const FileOpenOptions& options);
  Result<FileRegistration> register_file_descriptor(int fd, const FileOpenOptions& options);
  Status deregister_file(std::uint32_t file_id);

  Result<std::string> load_remote(std::span<const std::uint8_t> metadata);
  Status forget_remote(std::string_view peer);
  std::vector<std::string> remote_agents() const;
  Result<std::vector<DescriptorList>> remote_regions(std::string_view peer) const;
  Status set_metadata_entry(std::string_view key, std::span<const std::uint8_t> value);
  Result<std::vector<std::uint8_t>> remote_metadata_entry(std::string_view peer, std::string_view key) const;
  Result<std::uint16_t> listen(const std::string& address, std::uint16_t port);
  Result<std::string> fetch_remote(const std::string& host, std::uint16_t port, bool push_local,
                                   std::chrono::milliseconds timeout);

  Result<PreparedList> prepare_local(const DescriptorList& list);
  Result<PreparedList> prepare_remote(std::string_view peer, const DescriptorList& list);
  Result<TransferRequest> create_transfer(TransferOp op, const DescriptorList& local, std::string_view peer,
                                          const DescriptorList& remote, TransferOptions options);
  Result<TransferRequest> create_transfer(TransferOp op, const PreparedList& local,
                                          std::span<const std::uint32_t> local_indices, const PreparedList& remote,
                                          std::span<const std::uint32_t> remote_indices, TransferOptions options);
  // Lanes x block ids (agent_lanes.cc).
  Result<PreparedLanes> prepare_lanes(std::string_view peer, bool local, const BlockLanes& lanes);
  Result<TransferRequest> create_transfer(TransferOp op, const PreparedLanes& local, const PreparedLanes& remote,
                                          const LaneTransfer& transfer, TransferOptions options);

  Status notify(std::string_view peer, std::string_view message, std::uint64_t tag);
  detail::NotificationInbox& inbox() { return *inbox_; }

  // agent_cluster.cc
  detail::PeerEventQueue& peer_events() { return events_; }
  std::vector<std::string> find_peers(std::string_view prefix) const;
  Result<std::vector<std::string>> wait_for_peers(std::string_view prefix, std::size_t count,
                                                  std::chrono::milliseconds timeout);
  Result<DescriptorList> remote_named_regions(std::string_view peer, std::string_view name) const;
  Result<std::vector<std::string>> remote_region_names(std::string_view peer) const;
  std::string metrics_text() const;
  Status sync_metadata(std::chrono::milliseconds timeout);
  Result<std::uint16_t> metrics_port() const;

 private:
  struct PeerEntry {
    detail::AgentMetadata metadata;
    std::uint64_t generation = 0;
    std::vector<detail::RegionInfo> regions;  // sorted by (kind, device, address)
    std::map<std::string, std::shared_ptr<detail::BackendConnection>> connections;
    // Connections made before the peer's metadata last changed in place: they keep the
    // transfers created on them working; new transfers connect afresh (agent_peers.cc).
    std::vector<std::shared_ptr<detail::BackendConnection>> retired;
    // Metrics of transfers with this peer, by connection key (kept with the route).
    std::map<std::string, std::shared_ptr<detail::TransferCounters>> counters;
  };
  // A connection chosen for a transfer, with what the request needs to know of it.
  struct Route {
    std::shared_ptr<detail::BackendConnection> connection;
    std::string backend;
    std::uint64_t generation = 0;
    std::shared_ptr<detail::TransferCounters> counters;
  };
  std::shared_ptr<detail::TransferCounters> counters_of(PeerEntry& entry, const std::string& key);

  Impl() = default;
  // Loads decoded metadata: a new peer, an in-place update of a known instance, or a
  // new instance replacing an old one (agent_peers.cc). `authoritative`: the metadata
  // service delivered it (whoever holds the name's key there holds the name), so another
  // instance replaces the loaded one without proof that the old one is gone.
  // `judge` decides whether another instance may take a loaded name (OK or why not);
  // none: may_replace, which may block on a probe (callers' threads only).
  using Judge = std::function<Status(const detail::AgentMetadata& old,
                                     const std::vector<std::shared_ptr<detail::BackendConnection>>& connections,
                                     const detail::InstanceId& incoming)>;
  Result<std::string> install_peer(detail::AgentMetadata md, bool authoritative, const Judge& judge = {});
  // A push on the side channel (its handler, on the reactor thread): loaded or refused
  // now, or nullopt when the instance loaded under that name must first be asked whether
  // it is still there; the probe runs on the reactor (PeerProbes) and `later` gets the
  // verdict (agent_remote_push.cc). Never blocks.
  std::optional<Status> load_pushed(std::span<const std::uint8_t> metadata, detail::SideChannelHandlers::Later later);
  // The pushed `md` once the probe of `old` answered.
  Status conclude_push(detail::AgentMetadata md, const detail::AgentMetadata& old,
                       const Result<std::vector<std::uint8_t>>& probe);
  // A peer left (forgotten, or gone from the metadata service): its transfers fail.
  void remove_peer(const std::string& name, const std::string& why);
  // Starts the metadata service and the metrics endpoint (agent_cluster.cc).
  Status start_cluster_services();
  // Our metadata changed: tell the metadata service.
  void publish_change();
  Status start_backends();
  Status parse_staging_settings();  // "staging.<key>" of the backend settings
  // This agent is its own peer (seed 004's loopback agent: local dram <-> local file,
  // local copies); its entry mirrors the registry and is refreshed on every change.
  void refresh_self_entry();
  bool is_self(std::string_view peer) const { return peer == options_.name; }
  // Identity rules of load_remote (agent_identity.cc). Another instance under a loaded
  // name replaces it only when the loaded one is gone: OK, or why not. Called without
  // peers_mu_ (it may probe the old instance's side channel, bounded), on a caller's
  // thread: on the reactor thread it refuses rather than block.
  Status may_replace(const detail::AgentMetadata& old, const std::vector<std::shared_ptr<detail::BackendConnection>>& connections,
                     const detail::InstanceId& incoming) const;
  // What is known without asking anyone: OK (gone), why not, or (*ask set) only the old
  // instance's side channel can tell. Never blocks.
  Status replaceable_here(const detail::AgentMetadata& old,
                          const std::vector<std::shared_ptr<detail::BackendConnection>>& connections,
                          const detail::InstanceId& incoming, bool* ask) const;
  // What the old instance's side channel answered (its metadata, or why no answer).
  Status judge_probe(const detail::AgentMetadata& old, const Result<std::vector<std::uint8_t>>& probe,
                     const detail::InstanceId& incoming) const;
  // A probe's deadline: min(connect_timeout, 1 s).
  detail::Deadline probe_deadline() const;
  // The same instance may update its regions and entries, not where it is reached.
  static Status same_reachability(const detail::AgentMetadata& old, const detail::AgentMetadata& update);
  Result<std::shared_ptr<const detail::PreparedData>> validate_local(const DescriptorList& list) const;
  Result<std::shared_ptr<const detail::PreparedData>> validate_remote(std::string_view peer,
                                                                      const DescriptorList& list) const;
  // Picks the cheapest backend serving (local kind -> peer's kind) and connects if needed.
  Result<Route> route(std::string_view peer, MemoryKind local_kind, MemoryKind remote_kind, std::uint64_t bytes,
                      std::uint64_t descriptors, const std::string& forced_backend);
  Result<TransferRequest> make_request(TransferOp op, RequestParts parts, std::chrono::steady_clock::time_point t0,
                                       const std::string& peer, const Route& route, TransferOptions options);
  Result<std::shared_ptr<const detail::PreparedLanesData>> validate_lanes(std::string_view peer, bool local,
                                                                          const BlockLanes& lanes) const;

  AgentOptions options_;
  // How local vram travels over host backends (core/staged_connection.h).
  detail::StagingConfig staging_;
  // Fault injection around backend connections ("fault.*" settings, core/fault_connection.h).
  detail::FaultConfig fault_;
  std::string host_id_;
  std::string process_id_;
  std::vector<std::unique_ptr<detail::Backend>> backends_;
  // The agent's event loop, shared by its backends (BackendContext::reactor).
  std::shared_ptr<detail::Reactor> reactor_;
  detail::InstanceId instance_;  // drawn at creation (core/instance_id.h)
  // AgentOptions::secret (core/peer_auth.h); null: no authentication.
  std::shared_ptr<const detail::SharedSecret> secret_;
  std::shared_ptr<detail::MemoryRegistry> registry_;
  std::shared_ptr<detail::NotificationInbox> inbox_;

  // Held shared by every public operation, exclusively by shutdown.
  mutable std::shared_mutex life_mu_;
  bool closed_ = false;
  std::mutex registration_mu_;  // serialises register/deregister

  mutable std::mutex peers_mu_;
  std::map<std::string, PeerEntry, std::less<>> peers_;
  std::uint64_t next_generation_ = 1;
  // Why a peer went away (forgotten, left the metadata service), for later errors.
  std::map<std::string, std::string, std::less<>> departed_;

  // Shared allocations by base address, so registration can find a region's memfd.
  std::mutex shared_mu_;
  std::map<std::uint64_t, std::weak_ptr<detail::SharedSegment>> shared_segments_;
  void attach_share_fds(std::vector<detail::RegionInfo>& regions);

  // Registered files by id (the descriptors' device), guarded by registration_mu_.
  Result<FileRegistration> register_local_file(std::unique_ptr<detail::LocalFile> file);
  std::map<std::uint32_t, std::unique_ptr<detail::LocalFile>> files_;
  std::uint32_t next_file_id_ = 1;

  mutable std::mutex entries_mu_;
  std::map<std::string, std::vector<std::uint8_t>> entries_;  // published in local_metadata()

  // Grows with every change of what local_metadata() says (peers apply updates in order).
  std::atomic<std::uint64_t> revision_{0};
  std::map<std::uint64_t, std::string> region_names_;  // region id -> name, guarded by entries_mu_
  detail::PeerEventQueue events_;
  std::shared_ptr<detail::AgentMetrics> metrics_ = std::make_shared<detail::AgentMetrics>();
  mutable std::mutex service_mu_;
  std::atomic<std::uint64_t> service_warnings_{0};  // bad entries, etcd hiccups
  std::shared_ptr<detail::MetadataService> service_;       // guarded by service_mu_
  std::unique_ptr<detail::MetricsServer> metrics_server_;  // set in create, reset in shutdown

  mutable std::mutex side_mu_;
  std::unique_ptr<detail::SideChannelServer> side_channel_;
  // Probes of pushes (reactor thread only; made by listen, stopped by shutdown).
  std::unique_ptr<detail::PeerProbes> probes_;
  // Destroys replaced peers' connections off the reactor (install_peer on a push).
  detail::Closer closer_;
  std::optional<detail::SideChannelAddress> side_address_;
};

}  // namespace kvferry
