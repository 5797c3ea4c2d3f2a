// Backend interface: the seam between the core and each transport.
//
// The core never names a backend. A backend lives in its own folder under
// src/backends/, registers a factory with the BackendRegistry, and is driven only
// through these classes. See docs/backend_guide.md.
//
// Threading: Backend and BackendConnection methods may be called from any thread
// concurrently. A backend completes transfers by calling TransferJob::finish() from any
// thread, exactly once per post.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/transfer_job.h"
#include "kvferry/memory.h"
#include "kvferry/status.h"

namespace kvferry::detail {

class SharedSecret;  // core/peer_auth.h
class Reactor;       // core/reactor.h

struct Capabilities {
  MemoryKindSet local_kinds;   // our memory it moves as the initiator
  MemoryKindSet remote_kinds;  // peer memory it reaches
  // Our memory it lets peers reach (it is told of those regions); local_kinds if empty.
  // tcp serves vram to peers (staging it through pinned memory) though it only moves
  // host memory as an initiator.
  MemoryKindSet served_kinds;
  bool serves(MemoryKind k) const { return served_kinds.empty() ? local_kinds.contains(k) : served_kinds.contains(k); }
  bool same_process_only = false;
  bool same_host_only = false;
  bool notifications = false;
  // Its connection handshakes use BackendContext::secret when set (core/peer_auth.h:
  // InitiatorAuth / TargetAuth). With a secret, the agent starts only backends that do,
  // or that never leave the process (same_process_only).
  bool authenticates = false;
};

// Small performance model used to choose among backends (UCX's overhead/bandwidth).
struct CostModel {
  double per_request_us = 0;
  double per_descriptor_us = 0;
  double bandwidth_gbps = 1;  // 1e9 bytes/s
  double estimate_us(std::uint64_t bytes, std::uint64_t descriptors) const {
    return per_request_us + per_descriptor_us * static_cast<double>(descriptors) +
           static_cast<double>(bytes) / (bandwidth_gbps * 1e3);
  }
};

struct RegionInfo {
  std::uint64_t id = 0;  // unique within the agent, never reused
  MemoryKind kind = MemoryKind::kDram;
  std::uint32_t device = 0;
  std::uint64_t address = 0;
  std::uint64_t length = 0;
  // Local only, never on the wire: when the region lies in memory from
  // Agent::allocate_shared_memory, the memfd behind it and the region's offset in it
  // (a same-host backend may hand the fd to a peer so it can map the region).
  int share_fd = -1;
  std::uint64_t share_offset = 0;
  // Local only, never on the wire: for a file region (Agent::register_file), the file
  // opened by the agent, and the same file opened with O_DIRECT (-1 when not possible).
  // The agent owns both; they stay open until every backend has deregistered the region.
  int file_fd = -1;
  int file_direct_fd = -1;
  std::uint32_t file_direct_alignment = 0;  // O_DIRECT alignment of offset, length, address
};

using DeliverNotification = std::function<Status(std::string from, std::string wire_bytes)>;

// Who we are; handed to each backend at creation.
struct BackendContext {
  std::string agent_name;
  std::string host_id;     // boot id of this host
  std::string process_id;  // unique per process instance on this host
  std::chrono::milliseconds peer_timeout{5000};
  std::chrono::milliseconds connect_timeout{3000};
  // Largest notification (its wire bytes, core/notification_wire.h) a peer may send.
  std::size_t max_notification_bytes = 64 * 1024;
  std::map<std::string, std::string> params;  // "<key>" -> value, prefix stripped
  // Hands a notification's wire bytes received from a peer to the agent's inbox. An error
  // means the agent did not keep it (inbox full, too large, malformed): the backend must
  // fail the sender's request with it, never acknowledge the notification as delivered.
  DeliverNotification deliver_notification;
  // AgentOptions::secret; null: no authentication. A backend with
  // Capabilities::authenticates runs core/peer_auth.h's handshake on every connection.
  std::shared_ptr<const SharedSecret> secret;
  // The agent's one event loop (core/reactor.h): a backend serves its sockets, wake-ups and
  // periodic checks here instead of starting a loop thread of its own. Never null.
  std::shared_ptr<Reactor> reactor;
};

// What a peer's metadata says about it, for one backend.
struct PeerEndpoint {
  std::string agent_name;
  std::string host_id;
  std::string process_id;
  std::vector<std::uint8_t> connection_info;  // the peer backend's own bytes
  std::vector<RegionInfo> regions;            // what the peer announced (its addresses)
};

// One backend's link to one peer. Destroying it fails its unfinished jobs.
class BackendConnection {
 public:
  virtual ~BackendConnection() = default;
  // Starts the job; never waits on the network. The job's pieces stay valid until the
  // job finishes. An error return means the job was not started (finish not called).
  virtual Status post(const std::shared_ptr<TransferJob>& job) = 0;
  // Stops a job. On return the backend touches none of the job's local memory and has
  // finished the job (Cancelled) unless it had finished before. Whatever finishes a job
  // (success, failure, cancel), the backend calls finish only once it touches none of
  // the job's local memory any more: callers reuse that memory from the finish hook.
  virtual void cancel(const std::shared_ptr<TransferJob>& job) = 0;
  // Standalone notification.
  virtual Status notify(std::string_view message) = 0;
  // OK, or the reason the peer is unusable (PeerLost...).
  virtual Status health() const = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  virtual Capabilities capabilities() const = 0;
  virtual CostModel cost_model() const = 0;
  // Called for every region of a kind this backend supports. Until deregister returns,
  // peers may access the region; after it returns, no access is in progress or later.
  virtual Status register_region(const RegionInfo& region) = 0;
  virtual Status deregister_region(std::uint64_t region_id) = 0;
  // Bytes a peer needs to reach us through this backend (put in our metadata).
  virtual std::vector<std::uint8_t> connection_info() const = 0;
  // Builds a link to a peer. May block up to the context's connect_timeout.
  virtual Result<std::unique_ptr<BackendConnection>> connect(const PeerEndpoint& peer) = 0;
};

}  // namespace kvferry::detail
