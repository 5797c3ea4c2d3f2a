// kvferry/agent.h — the Agent: one named endpoint per process or GPU worker.
//
// Contract
// - Thread safety: every public method may be called from any thread at any time.
// - Ownership: `Agent::create` returns the only owner. Destroying the Agent cancels its
//   transfers in flight, stops its threads, closes its sockets. TransferRequests and
//   PreparedLists that outlive it report errors; they never touch freed state.
// - Memory: the Agent never owns registered memory. The caller keeps it alive and
//   unchanged in address until `deregister_memory` returns OK.
// - Blocking: methods that may block name their bound: `fetch_remote` (connect and
//   exchange, up to `timeout`), `deregister_memory` (until the backends quiesce on
//   that memory, bounded, no network wait), `wait_for_notifications` (up to `timeout`).
//   The first `create_transfer` or `notify` towards a peer through a backend connects
//   to it (up to `connect_timeout`); later ones and `post` never wait on the network.
//   `notify` to a peer that only has a side channel waits for its answer (same bound).
// - Errors: every failure is a Status whose message names what was wrong.
// - Peers: a peer that dies or stops answering turns its transfers into kPeerLost within
//   `AgentOptions::peer_timeout`; later calls to it fail fast until it is loaded again.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvferry/block_lanes.h"
#include "kvferry/file.h"
#include "kvferry/memory.h"
#include "kvferry/peer_events.h"
#include "kvferry/prepared_list.h"
#include "kvferry/shared_memory.h"
#include "kvferry/status.h"
#include "kvferry/transfer.h"

namespace kvferry {

struct AgentOptions {
  // Unique among the agents that talk to each other; 1..255 bytes.
  std::string name;
  // Backends to start; empty means every compiled-in backend that is usable here.
  std::vector<std::string> backends;
  // Backend settings, "<backend>.<key>" -> value, e.g. {"tcp.streams", "4"},
  // {"tcp.bind", "0.0.0.0"}, {"tcp.advertise", "10.0.0.5"}. Unknown keys are an error.
  std::map<std::string, std::string> backend_params;
  // A peer that is silent this long while transfers with it are in flight is lost.
  std::chrono::milliseconds peer_timeout{5000};
  // Bound on connecting to a peer (side channel and backends).
  std::chrono::milliseconds connect_timeout{3000};
  // Largest notification message accepted, sent or received.
  std::size_t max_notification_bytes = 64 * 1024;
  // Notifications kept in the inbox. One that arrives while it is full is refused: the
  // sender's request fails (kRemoteError, "inbox ... is full"), nothing is lost silently.
  std::size_t max_inbox_notifications = 1 << 16;
  // Metadata service, "etcd://HOST:PORT/NAMESPACE" (etcd v3, its JSON gateway). Empty:
  // none; peers meet through the side channel or load_remote. With one, the agent
  // publishes its metadata under the namespace (a lease it keeps alive), loads every
  // agent of the namespace as it joins or changes, and forgets each one that leaves:
  // a dead agent is seen as gone within `metadata_lease`, even by agents that never
  // talked to it. Agent::create fails if the service cannot be reached.
  std::string metadata_service;
  // How soon this agent is seen as gone by the others if it dies: whole seconds, >= 2.
  // Its etcd lease is one second shorter (etcd expires leases at a twice-a-second check),
  // renewed every quarter of that. Agent::create fails, naming the figures, when etcd grants
  // a longer lease (its floor is 1.5 election timeouts: 2 s with etcd's defaults, so a
  // 2 s bound needs etcd run with --election-timeout <= 600).
  std::chrono::seconds metadata_lease{5};
  // "ADDRESS:PORT" of an HTTP endpoint serving Prometheus metrics at /metrics (port 0
  // picks a free port: Agent::metrics_port). Empty: none.
  std::string metrics_address;
  // Shared secret (16..1024 bytes; 32 random bytes recommended). Empty: off. With one,
  // side-channel frames and the handshakes of backends that reach other processes are
  // authenticated (HMAC-SHA256, fresh challenge per connection: no replay); a peer with
  // no secret or another one is refused, naming why. Backends that cannot authenticate
  // are not started. Data after a handshake is not encrypted (docs/reliability.md).
  std::vector<std::uint8_t> secret;
};

struct TransferOptions {
  // Delivered to the peer's inbox after all bytes of the transfer are visible there.
  // If the peer cannot keep it (inbox full, larger than it accepts) the request fails
  // with kRemoteError saying why; it never completes as done with the message lost.
  std::optional<std::string> notification;
  // The caller's name for this request: carried by its notification to the peer
  // (Notification::tag) and by its completion (completion_queue.h). Free for any use.
  std::uint64_t tag = 0;
  // Force a backend by name; empty picks the cheapest one that serves both sides.
  std::string backend;
};

class Agent {
 public:
  static Result<std::unique_ptr<Agent>> create(AgentOptions options);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  const std::string& name() const;
  // 128 random bits (32 hex digits) drawn when this agent was created: a peer is its
  // (name, instance id), so a restarted agent or an impostor under the same name is told
  // apart from the one that was loaded.
  std::string instance_id() const;
  // Names of the backends this agent started.
  std::vector<std::string> backends() const;

  // --- Registration ------------------------------------------------------------------
  // Each descriptor becomes one region, reachable by every started backend that
  // supports the list's kind. Overlapping an existing region is an error. Atomic: on
  // failure nothing of the list stays registered.
  Status register_memory(const DescriptorList& regions);
  // The same, under a name that travels in the metadata (e.g. "kv.layer.17", "pool";
  // 1..128 printable bytes): peers find these regions with remote_named_regions. A name
  // may be used by several registrations of one memory kind; their regions add up.
  Status register_memory(const DescriptorList& regions, std::string_view name);
  // Each descriptor must equal a registered region exactly. Fails (and changes nothing)
  // if a posted transfer of this agent still uses one of them.
  Status deregister_memory(const DescriptorList& regions);

  // Host memory that same-host peers can map (memfd-backed, pre-faulted, huge pages when
  // allowed): the fastest pool for the shm backend. Register it like any memory.
  Result<SharedMemory> allocate_shared_memory(std::size_t bytes);

  // --- Files (kvferry/file.h) --------------------------------------------------------
  // Opens `path` and registers it as one `file` region (register_memory refuses the file
  // kind: a file region needs an open file behind it). Blocks on the open, and on
  // fallocate when `options.capacity` grows the file.
  Result<FileRegistration> register_file(const std::string& path, FileOpenOptions options = {});
  // The same for a descriptor the caller opened; the agent uses a duplicate (and reopens
  // it through /proc/self/fd for O_DIRECT). `create` and `truncate` do not apply.
  Result<FileRegistration> register_file_descriptor(int fd, FileOpenOptions options = {});
  // Deregisters and closes the file. Fails (and changes nothing) while a posted transfer
  // uses it.
  Status deregister_file(std::uint32_t file_id);

  // --- Metadata ----------------------------------------------------------------------
  // Versioned, self-describing bytes: name, backends' connection info, registered
  // regions. Hand them to a peer's `load_remote` by any means.
  Result<std::vector<std::uint8_t>> local_metadata() const;
  // Parses untrusted bytes (bounds-checked; corrupt input is an error, never a crash)
  // and returns the peer's name. The same rules hold for metadata that peers push
  // through our side channel (`listen`) and that a metadata service delivers:
  // - The same instance loaded again is an update in place: newer metadata (a higher
  //   revision) replaces its regions, region names and entries; older or repeated
  //   metadata changes nothing. Its host, process, backends and side channel must not
  //   change (AlreadyExists). Transfers in flight and prepared lists stay valid; new
  //   transfers see the new regions (connections made before the update keep serving
  //   the requests created on them; at most 16 such connections per peer are kept).
  // - Another instance under a loaded name (a restarted peer) replaces the entry only
  //   when the loaded instance is gone: a connection to it was lost, it was an agent of
  //   this process that was destroyed, its process on this host has exited, or its side
  //   channel refuses connections or answers as another instance (asked within
  //   min(connect_timeout, 1 s)). Otherwise
  //   AlreadyExists, naming both instances: call forget_remote first.
  //   Replacing closes the old entry's connections; its transfers fail.
  // Our own metadata grows a revision with every registration, deregistration and entry,
  // so peers apply updates in order (over the side channel: fetch_remote again; with a
  // metadata service: automatically).
  Result<std::string> load_remote(std::span<const std::uint8_t> metadata);
  Status forget_remote(std::string_view peer);
  std::vector<std::string> remote_agents() const;
  // The regions a loaded peer announced (its own addresses), e.g. to build remote
  // descriptor lists without a side conversation.
  Result<std::vector<DescriptorList>> remote_regions(std::string_view peer) const;
  // The regions a loaded peer registered under `name`, in its registration order (one
  // memory kind). NotFound if the peer announced none under that name.
  Result<DescriptorList> remote_named_regions(std::string_view peer, std::string_view name) const;
  // The region names a loaded peer announced, sorted.
  Result<std::vector<std::string>> remote_region_names(std::string_view peer) const;

  // --- Application entries in the metadata -------------------------------------------
  // Small named blobs carried in local_metadata() (for example a KV pool's geometry,
  // checked by the peer before any transfer). Key: 1..64 printable bytes; value up to
  // 64 KiB; at most 64 entries. Setting an existing key replaces it.
  Status set_metadata_entry(std::string_view key, std::span<const std::uint8_t> value);
  // What a loaded peer published under `key`; NotFound if it published nothing.
  Result<std::vector<std::uint8_t>> remote_metadata_entry(std::string_view peer, std::string_view key) const;

  // --- Side channel (TCP) ------------------------------------------------------------
  // Listens so that peers can fetch our metadata, push theirs, and send notifications.
  // Port 0 picks a free port. Returns the bound port. Once per agent.
  Result<std::uint16_t> listen(const std::string& address = "127.0.0.1",
                               std::uint16_t port = 0);
  // Connects to a peer's side channel, sends our metadata (if `push_local`), receives
  // and loads the peer's. Returns the peer's name. Blocks up to `timeout`.
  Result<std::string> fetch_remote(const std::string& host, std::uint16_t port,
                                   bool push_local = true,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // --- Transfers ---------------------------------------------------------------------
  // Pairwise transfer of `local[i]` with `remote[i]`; lengths must match pairwise.
  Result<TransferRequest> create_transfer(TransferOp op, const DescriptorList& local,
                                          std::string_view peer,
                                          const DescriptorList& remote,
                                          TransferOptions options = {});
  Result<PreparedList> prepare_local(const DescriptorList& list);
  Result<PreparedList> prepare_remote(std::string_view peer, const DescriptorList& list);
  // Index transfer (the hot path): pairs local[local_indices[i]] with
  // remote[remote_indices[i]]; runs contiguous on both sides merge into one descriptor.
  Result<TransferRequest> create_transfer(TransferOp op, const PreparedList& local,
                                          std::span<const std::uint32_t> local_indices,
                                          const PreparedList& remote,
                                          std::span<const std::uint32_t> remote_indices,
                                          TransferOptions options = {});

  // Lanes x block ids (block_lanes.h): each lane is checked once here, whole; a request
  // over them then costs O(lanes + blocks), never O(lanes x blocks).
  Result<PreparedLanes> prepare_local_lanes(const BlockLanes& lanes);
  Result<PreparedLanes> prepare_remote_lanes(std::string_view peer, const BlockLanes& lanes);
  // Strided transfer (the engines' hot path): the selected blocks in every selected lane.
  // Block ids are checked by range per request; runs of ids consecutive on both sides
  // merge once and apply to all lanes.
  Result<TransferRequest> create_transfer(TransferOp op, const PreparedLanes& local, const PreparedLanes& remote,
                                          const LaneTransfer& transfer, TransferOptions options = {});

  // --- Notifications -----------------------------------------------------------------
  // Sends `message` (with `tag`) to the peer's inbox (no data). Over a backend link it
  // does not wait for delivery, and a refusal there (inbox full) reaches only the peer's
  // dropped_notifications(); attach the message to a transfer to learn of it. Over the
  // side channel it waits for the peer's answer and returns its refusal.
  Status notify(std::string_view peer, std::string_view message, std::uint64_t tag = 0);
  // Drains the inbox.
  std::vector<Notification> take_notifications();
  // Takes only the notifications that match `filter` (by peer, by tag); others stay for
  // other consumers.
  std::vector<Notification> take_notifications(const NotificationFilter& filter);
  // Blocks until the inbox holds at least one notification or `timeout` passes;
  // returns whether it holds any.
  bool wait_for_notifications(std::chrono::nanoseconds timeout);
  // Blocks until, for every key, a notification from that peer with that tag is in the
  // inbox, then takes exactly those (the oldest match per key; a key listed twice needs
  // two) and returns them in key order. Timeout: takes nothing; the status names the
  // missing (peer, tag) keys. Other notifications stay for other consumers.
  Result<std::vector<Notification>> wait_for_notifications(std::span<const NotificationKey> keys,
                                                           std::chrono::nanoseconds timeout);
  // Notifications this agent refused (inbox full, too large, malformed); the sender of
  // each was told (its request failed), except for standalone notify() over a backend.
  std::uint64_t dropped_notifications() const;

  // With a metadata service: waits up to `timeout` until the service holds everything
  // registered and published so far (changes are sent by a background thread). OK at
  // once without a service. Call it before telling peers to look.
  Status sync_metadata(std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // --- Peers over time (kvferry/peer_events.h) ---------------------------------------
  // Drains the peer events recorded so far (at most 65536 are kept; older ones drop).
  std::vector<PeerEvent> take_peer_events();
  // Blocks until a peer event is pending or `timeout` passes; returns whether one is.
  bool wait_for_peer_events(std::chrono::nanoseconds timeout);
  // Loaded peers whose name starts with `prefix` (all with an empty prefix), sorted.
  std::vector<std::string> find_peers(std::string_view prefix) const;
  // Waits up to `timeout` until at least `count` loaded peers match `prefix` (with a
  // metadata service, until that many have joined); returns them, or Timeout naming how
  // many were found.
  Result<std::vector<std::string>> wait_for_peers(std::string_view prefix, std::size_t count,
                                                  std::chrono::milliseconds timeout);

  // --- Monitoring ----------------------------------------------------------------------
  // The Prometheus text served at /metrics (also without an endpoint).
  std::string metrics_text() const;
  // The bound port of the metrics endpoint; NotFound without metrics_address.
  Result<std::uint16_t> metrics_port() const;

  class Impl;

 private:
  explicit Agent(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace kvferry
