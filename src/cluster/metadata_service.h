// MetadataService: an agent's presence in a shared etcd namespace.
//
//   etcd://HOST:PORT/NAMESPACE  ->  key "NAMESPACE/agents/<agent name>" = encoded metadata
//
// The agent's key lives under an etcd lease one second shorter than the promised bound
// (etcd expires leases at a twice-a-second check) that one thread keeps alive (every quarter
// of its TTL, at once again after a failed renewal) and republishes when the agent's metadata changes; a second thread watches the
// namespace and hands every join, update and departure to the agent. An agent that dies
// stops renewing: etcd deletes its key when the lease runs out and every watcher sees the
// departure then, whether or not it ever talked to the dead agent. Closing revokes the
// lease, so a clean exit is seen at once.
//
// Threading: start() and the destructor from any one thread; republish() from any thread.
// The hooks run on the service's threads (and within start()); they must not call back
// into the service's destructor.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd_client.h"
#include "kvferry/status.h"

namespace kvferry::detail {

struct MetadataServiceUrl {
  std::string host;
  std::uint16_t port = 0;
  std::string name_space;  // "a/b", no leading or trailing slash
  std::string agents_prefix() const { return name_space + "/agents/"; }
};

// "etcd://127.0.0.1:2379/kvferry/prod"; InvalidArgument says what is wrong.
Result<MetadataServiceUrl> parse_metadata_service_url(std::string_view url);

struct MetadataServiceHooks {
  // Our metadata, encoded (published at start and after every republish()).
  std::function<Result<std::vector<std::uint8_t>>()> local_metadata;
  // A peer published or updated its metadata under `name` (untrusted bytes).
  std::function<void(const std::string& name, std::span<const std::uint8_t> metadata)> peer_put;
  // A peer's key went away: it shut down, or its lease ran out.
  std::function<void(const std::string& name)> peer_gone;
  // Problems the service recovers from by itself (etcd unreachable, a bad entry).
  std::function<void(const Status&)> warn;
};

class MetadataService {
 public:
  // Joins: grants the lease, publishes our metadata, loads every agent already in the
  // namespace (through the hooks), then starts the two threads. Bounded by `timeout`
  // per etcd call.
  static Result<std::unique_ptr<MetadataService>> start(MetadataServiceUrl url, std::string agent_name,
                                                        std::chrono::seconds lease_ttl,
                                                        std::chrono::milliseconds timeout,
                                                        MetadataServiceHooks hooks);
  // Leaves: stops the threads and revokes the lease (bounded by the timeout). Idempotent;
  // afterwards the hooks are never called again.
  void stop();
  ~MetadataService();

  // Our metadata changed: publish it again (soon, from the lease thread).
  void republish();
  // Waits until every change announced by republish() so far is in etcd, or `deadline`.
  Status wait_published(std::chrono::steady_clock::time_point deadline);
  const MetadataServiceUrl& url() const { return url_; }
  std::shared_ptr<EtcdTraffic> traffic() const { return traffic_; }
  // Whether etcd answered the last renewal.
  bool healthy() const { return healthy_.load(); }

 private:
  MetadataService() = default;
  Status publish(EtcdClient& client);
  Status load_all(EtcdClient& client, std::int64_t* revision);
  void lease_loop();
  void watch_loop(std::int64_t revision);
  bool name_of(const std::string& key, std::string* name) const;

  MetadataServiceUrl url_;
  std::string agent_name_;
  std::chrono::seconds ttl_{5};
  std::chrono::milliseconds timeout_{3000};
  MetadataServiceHooks hooks_;
  std::shared_ptr<EtcdTraffic> traffic_ = std::make_shared<EtcdTraffic>();
  std::unique_ptr<EtcdClient> lease_client_;
  std::int64_t lease_ = 0;
  std::vector<std::string> known_;  // names seen by the watch thread (resync), sorted

  std::atomic<bool> stop_{false};
  std::once_flag stopped_;
  std::atomic<bool> healthy_{true};
  // Lease renewals that failed; the watch starts over when this moves (the stream may be
  // silent because etcd or the path to it is gone, not because nothing changed).
  std::atomic<std::uint64_t> renewal_failures_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool dirty_ = false;         // guarded by mu_
  std::uint64_t requested_ = 0;  // republish() calls, guarded by mu_
  std::uint64_t published_ = 0;  // the requested_ count last published, guarded by mu_
  std::thread lease_thread_;
  std::thread watch_thread_;
};

}  // namespace kvferry::detail
