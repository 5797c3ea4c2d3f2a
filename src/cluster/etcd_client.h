// EtcdClient: etcd's v3 API through its JSON gateway (HTTP/1.1 POST of JSON bodies, keys
// and values in base64), spoken with libcurl. One client is one connection and is used by
// one thread at a time; the metadata service gives each of its threads its own.
//
// Everything etcd answers is untrusted: responses are size-capped, parsed with nlohmann
// json without exceptions escaping, and every field is type-checked before use.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvferry/status.h"

namespace kvferry::detail {

// Bytes moved to and from etcd, shared by the clients of one agent.
struct EtcdTraffic {
  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> requests{0};
};

struct EtcdKeyValue {
  std::string key;
  std::vector<std::uint8_t> value;
  std::int64_t mod_revision = 0;
};

struct EtcdEvent {
  bool deleted = false;  // else a put
  EtcdKeyValue kv;
};

class EtcdClient {
 public:
  // Largest answer accepted (a range of a whole namespace of agents).
  static constexpr std::size_t kMaxResponseBytes = 256u << 20;

  EtcdClient(std::string host, std::uint16_t port, std::chrono::milliseconds timeout,
             std::shared_ptr<EtcdTraffic> traffic);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  Status put(const std::string& key, std::span<const std::uint8_t> value, std::int64_t lease = 0);
  // Keys starting with `prefix`; `revision` gets the store revision the answer reflects.
  Result<std::vector<EtcdKeyValue>> range_prefix(const std::string& prefix, std::int64_t* revision);
  Status delete_key(const std::string& key);
  // A new lease; etcd may grant a longer TTL than asked (its floor derives from its
  // election timeout), so the answer carries the TTL granted.
  struct Lease {
    std::int64_t id = 0;
    std::int64_t ttl_seconds = 0;
  };
  Result<Lease> lease_grant(std::int64_t ttl_seconds);
  // The lease's remaining TTL; PeerLost when etcd no longer knows it (expired).
  Result<std::int64_t> lease_keepalive(std::int64_t lease);
  Status lease_revoke(std::int64_t lease);

  // Streams the events of keys under `prefix` from `start_revision` until `keep_going`
  // returns false (asked about every `poll` at least) or the stream fails. `on_created`
  // runs once etcd has confirmed the watch.
  Status watch(const std::string& prefix, std::int64_t start_revision,
               const std::function<void(const EtcdEvent&)>& on_event, const std::function<bool()>& keep_going,
               std::chrono::milliseconds poll, const std::function<void()>& on_created = {});

  std::string endpoint() const { return host_ + ":" + std::to_string(port_); }

 private:
  struct Answer;
  Result<std::string> post(const std::string& path, const std::string& body);

  std::string host_;
  std::uint16_t port_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<EtcdTraffic> traffic_;
  void* curl_ = nullptr;  // CURL*, owned (curl_easy_cleanup)
};

// The first key after every key with this prefix (etcd's range_end for a prefix).
std::string prefix_range_end(const std::string& prefix);

}  // namespace kvferry::detail
