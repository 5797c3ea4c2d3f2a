#include "cluster/etcd_client.h"

#include <curl/curl.h>

#include <mutex>
#include <nlohmann/json.hpp>

#include "cluster/base64.h"

namespace kvferry::detail {

using json = nlohmann::json;

namespace {

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Sink {
  std::string data;
  bool overflow = false;
  EtcdTraffic* traffic = nullptr;
};

size_t collect(char* ptr, size_t size, size_t n, void* user) {
  auto* sink = static_cast<Sink*>(user);
  const size_t bytes = size * n;
  if (sink->traffic) sink->traffic->received.fetch_add(bytes, std::memory_order_relaxed);
  if (sink->data.size() + bytes > EtcdClient::kMaxResponseBytes) {
    sink->overflow = true;
    return 0;  // aborts the transfer
  }
  sink->data.append(ptr, bytes);
  return bytes;
}

// Parses without throwing; a non-object is an error.
Result<json> parse_object(std::string_view text, const char* what) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Corrupt(std::string("etcd: ") + what + ": answer is not a JSON object");
  return j;
}

// etcd's JSON carries int64 as strings; absent means 0.
std::int64_t int_field(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return 0;
  if (it->is_number_integer()) return it->get<std::int64_t>();
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    if (s.empty() || s.size() > 20) return 0;
    std::int64_t v = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return 0;
      v = v * 10 + (c - '0');
    }
    return v;
  }
  return 0;
}

Result<std::vector<std::uint8_t>> bytes_field(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return std::vector<std::uint8_t>{};
  if (!it->is_string()) return Corrupt(std::string("etcd: field '") + name + "' is not a string");
  return base64_decode(it->get_ref<const std::string&>());
}

Result<EtcdKeyValue> parse_kv(const json& j) {
  if (!j.is_object()) return Corrupt("etcd: a key-value is not an object");
  EtcdKeyValue kv;
  KVF_ASSIGN_OR_RETURN(auto key, bytes_field(j, "key"));
  kv.key.assign(key.begin(), key.end());
  KVF_ASSIGN_OR_RETURN(kv.value, bytes_field(j, "value"));
  kv.mod_revision = int_field(j, "mod_revision");
  return kv;
}

Status error_of(const json& j) {
  // grpc-gateway errors: {"error": "...", "code": N, "message": "..."}.
  auto it = j.find("error");
  if (it == j.end()) return Status::Ok();
  std::string text = it->is_string() ? it->get<std::string>() : it->dump();
  if (auto m = j.find("message"); m != j.end() && m->is_string()) text = m->get<std::string>();
  if (text.find("lease not found") != std::string::npos) return PeerLost("etcd: " + text.substr(0, 512));
  return RemoteError("etcd: " + text.substr(0, 512));
}

}  // namespace

std::string prefix_range_end(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

EtcdClient::EtcdClient(std::string host, std::uint16_t port, std::chrono::milliseconds timeout,
                       std::shared_ptr<EtcdTraffic> traffic)
    : host_(std::move(host)), port_(port), timeout_(timeout), traffic_(std::move(traffic)) {
  global_init();
  curl_ = curl_easy_init();
}

EtcdClient::~EtcdClient() {
  if (curl_) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

Result<std::string> EtcdClient::post(const std::string& path, const std::string& body) {
  CURL* c = static_cast<CURL*>(curl_);
  if (!c) return Internal("etcd: curl_easy_init failed");
  const std::string url = "http://" + (host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_) + ":" +
                          std::to_string(port_) + path;
  Sink sink;
  sink.traffic = traffic_.get();
  curl_easy_reset(c);
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_.count()));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeout_.count()));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROXY, "");  // loopback and cluster addresses: never a proxy
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  const CURLcode rc = curl_easy_perform(c);
  curl_slist_free_all(headers);
  if (traffic_) {
    // What went over the wire at the HTTP level: request headers and body out, response
    // headers in (response bodies are counted as they arrive).
    long request_headers = 0, response_headers = 0;
    curl_easy_getinfo(c, CURLINFO_REQUEST_SIZE, &request_headers);
    curl_easy_getinfo(c, CURLINFO_HEADER_SIZE, &response_headers);
    traffic_->sent.fetch_add(static_cast<std::uint64_t>(request_headers) + body.size(), std::memory_order_relaxed);
    traffic_->received.fetch_add(static_cast<std::uint64_t>(response_headers), std::memory_order_relaxed);
    traffic_->requests.fetch_add(1, std::memory_order_relaxed);
  }
  if (sink.overflow) return Corrupt("etcd: answer to " + path + " exceeds the size cap");
  if (rc != CURLE_OK)
    return Unavailable("etcd at " + endpoint() + ": " + path + ": " + curl_easy_strerror(rc));
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  if (code != 200) {
    auto j = parse_object(sink.data, path.c_str());
    if (j.ok()) {
      if (Status s = error_of(*j); !s.ok()) return s;
    }
    return RemoteError("etcd at " + endpoint() + ": " + path + ": HTTP " + std::to_string(code));
  }
  return std::move(sink.data);
}

Status EtcdClient::put(const std::string& key, std::span<const std::uint8_t> value, std::int64_t lease) {
  json body{{"key", base64_encode(key)}, {"value", base64_encode(value)}};
  if (lease != 0) body["lease"] = std::to_string(lease);
  KVF_ASSIGN_OR_RETURN(std::string text, post("/v3/kv/put", body.dump()));
  KVF_ASSIGN_OR_RETURN(json j, parse_object(text, "put"));
  return error_of(j);
}

Result<std::vector<EtcdKeyValue>> EtcdClient::range_prefix(const std::string& prefix, std::int64_t* revision) {
  json body{{"key", base64_encode(prefix)}, {"range_end", base64_encode(prefix_range_end(prefix))}};
  KVF_ASSIGN_OR_RETURN(std::string text, post("/v3/kv/range", body.dump()));
  KVF_ASSIGN_OR_RETURN(json j, parse_object(text, "range"));
  KVF_RETURN_IF_ERROR(error_of(j));
  if (auto h = j.find("header"); h != j.end() && h->is_object() && revision) *revision = int_field(*h, "revision");
  std::vector<EtcdKeyValue> out;
  if (auto kvs = j.find("kvs"); kvs != j.end()) {
    if (!kvs->is_array()) return Corrupt("etcd: range: 'kvs' is not an array");
    for (const json& e : *kvs) {
      KVF_ASSIGN_OR_RETURN(EtcdKeyValue kv, parse_kv(e));
      out.push_back(std::move(kv));
    }
  }
  return out;
}

Status EtcdClient::delete_key(const std::string& key) {
  json body{{"key", base64_encode(key)}};
  KVF_ASSIGN_OR_RETURN(std::string text, post("/v3/kv/deleterange", body.dump()));
  KVF_ASSIGN_OR_RETURN(json j, parse_object(text, "deleterange"));
  return error_of(j);
}

Result<EtcdClient::Lease> EtcdClient::lease_grant(std::int64_t ttl_seconds) {
  json body{{"TTL", std::to_string(ttl_seconds)}};
  KVF_ASSIGN_OR_RETURN(std::string text, post("/v3/lease/grant", body.dump()));
  KVF_ASSIGN_OR_RETURN(json j, parse_object(text, "lease grant"));
  KVF_RETURN_IF_ERROR(error_of(j));
  const std::int64_t id = int_field(j, "ID");
  if (id == 0) return Corrupt("etcd: lease grant: no lease id in the answer");
  const std::int64_t ttl = int_field(j, "TTL");
  if (ttl <= 0) return Corrupt("etcd: lease grant: no TTL in the answer");
  return Lease{id, ttl};
}

Result<std::int64_t> EtcdClient::lease_keepalive(std::int64_t lease) {
  // The gateway's keepalive is a stream; one request and its one answer renew once.
  json body{{"ID", std::to_string(lease)}};
  KVF_ASSIGN_OR_RETURN(std::string text, post("/v3/lease/keepalive", body.dump()));
  const auto nl = text.find('\n');
  KVF_ASSIGN_OR_RETURN(json j, parse_object(std::string_view(text).substr(0, nl), "lease keepalive"));
  KVF_RETURN_IF_ERROR(error_of(j));
  auto r = j.find("result");
  if (r == j.end() || !r->is_object()) return Corrupt("etcd: lease keepalive: no result");
  const std::int64_t ttl = int_field(*r, "TTL");
  if (ttl <= 0) return PeerLost("etcd: lease " + std::to_string(lease) + " has expired");
  return ttl;
}

Status EtcdClient::lease_revoke(std::int64_t lease) {
  json body{{"ID", std::to_string(lease)}};
  KVF_ASSIGN_OR_RETURN(std::string text, post("/v3/lease/revoke", body.dump()));
  KVF_ASSIGN_OR_RETURN(json j, parse_object(text, "lease revoke"));
  return error_of(j);
}

namespace {

struct WatchSink {
  std::string pending;
  Status status;
  bool created = false;
  bool overflow = false;
  EtcdTraffic* traffic = nullptr;
  const std::function<void(const EtcdEvent&)>* on_event = nullptr;
  const std::function<void()>* on_created = nullptr;
};

// One streamed message: {"result": {...}} or {"error": ...}.
Status handle_watch_message(WatchSink& sink, std::string_view line) {
  KVF_ASSIGN_OR_RETURN(json j, parse_object(line, "watch"));
  KVF_RETURN_IF_ERROR(error_of(j));
  auto r = j.find("result");
  if (r == j.end() || !r->is_object()) return Corrupt("etcd: watch: message without a result");
  if (auto c = r->find("created"); c != r->end() && c->is_boolean() && c->get<bool>()) {
    sink.created = true;
    if (sink.on_created && *sink.on_created) (*sink.on_created)();
  }
  if (auto c = r->find("canceled"); c != r->end() && c->is_boolean() && c->get<bool>())
    return Unavailable("etcd: the watch was cancelled (compacted at revision " +
                       std::to_string(int_field(*r, "compact_revision")) + ")");
  if (auto events = r->find("events"); events != r->end()) {
    if (!events->is_array()) return Corrupt("etcd: watch: 'events' is not an array");
    for (const json& e : *events) {
      if (!e.is_object()) return Corrupt("etcd: watch: an event is not an object");
      EtcdEvent ev;
      auto type = e.find("type");
      ev.deleted = type != e.end() && type->is_string() && type->get<std::string>() == "DELETE";
      auto kv = e.find("kv");
      if (kv == e.end()) return Corrupt("etcd: watch: an event without its key");
      KVF_ASSIGN_OR_RETURN(ev.kv, parse_kv(*kv));
      (*sink.on_event)(ev);
    }
  }
  return Status::Ok();
}

size_t watch_write(char* ptr, size_t size, size_t n, void* user) {
  auto* sink = static_cast<WatchSink*>(user);
  const size_t bytes = size * n;
  if (sink->traffic) sink->traffic->received.fetch_add(bytes, std::memory_order_relaxed);
  sink->pending.append(ptr, bytes);
  for (;;) {
    const auto nl = sink->pending.find('\n');
    if (nl == std::string::npos) break;
    const std::string line = sink->pending.substr(0, nl);
    sink->pending.erase(0, nl + 1);
    if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
    if (Status s = handle_watch_message(*sink, line); !s.ok()) {
      sink->status = s;
      return 0;
    }
  }
  if (sink->pending.size() > EtcdClient::kMaxResponseBytes) {
    sink->overflow = true;
    return 0;
  }
  return bytes;
}

}  // namespace

Status EtcdClient::watch(const std::string& prefix, std::int64_t start_revision,
                         const std::function<void(const EtcdEvent&)>& on_event,
                         const std::function<bool()>& keep_going, std::chrono::milliseconds poll,
                         const std::function<void()>& on_created) {
  json create{{"key", base64_encode(prefix)}, {"range_end", base64_encode(prefix_range_end(prefix))}};
  if (start_revision > 0) create["start_revision"] = std::to_string(start_revision);
  const std::string body = json{{"create_request", create}}.dump();
  const std::string url = "http://" + (host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_) + ":" +
                          std::to_string(port_) + "/v3/watch";
  CURL* c = curl_easy_init();
  CURLM* m = curl_multi_init();
  if (!c || !m) {
    if (c) curl_easy_cleanup(c);
    if (m) curl_multi_cleanup(m);
    return Internal("etcd: curl init failed");
  }
  WatchSink sink;
  sink.traffic = traffic_.get();
  sink.on_event = &on_event;
  sink.on_created = &on_created;
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, watch_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeout_.count()));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROXY, "");
  // A quiet stream is normal (nothing changed); a dead connection under it is found by TCP
  // keep-alive probes, and a hung etcd by the caller's keep_going (the lease renewals).
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 5L);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 2L);
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_multi_add_handle(m, c);
  if (traffic_) traffic_->requests.fetch_add(1, std::memory_order_relaxed);
  Status result;
  const auto connect_deadline = std::chrono::steady_clock::now() + timeout_;
  for (;;) {
    int running = 0;
    curl_multi_perform(m, &running);
    if (!sink.status.ok()) {
      result = sink.status;
      break;
    }
    if (sink.overflow) {
      result = Corrupt("etcd: watch message exceeds the size cap");
      break;
    }
    if (running == 0) {
      int left = 0;
      CURLMsg* msg = curl_multi_info_read(m, &left);
      const CURLcode rc = msg && msg->msg == CURLMSG_DONE ? msg->data.result : CURLE_OK;
      result = Unavailable(std::string("etcd at ") + endpoint() + ": the watch stream ended" +
                           (rc != CURLE_OK ? std::string(": ") + curl_easy_strerror(rc) : std::string()));
      break;
    }
    if (!keep_going()) break;
    if (!sink.created && std::chrono::steady_clock::now() > connect_deadline) {
      result = Timeout("etcd at " + endpoint() + ": the watch was not confirmed in time");
      break;
    }
    curl_multi_poll(m, nullptr, 0, static_cast<int>(poll.count()), nullptr);
  }
  if (traffic_) {
    long request_headers = 0, response_headers = 0;
    curl_easy_getinfo(c, CURLINFO_REQUEST_SIZE, &request_headers);
    curl_easy_getinfo(c, CURLINFO_HEADER_SIZE, &response_headers);
    traffic_->sent.fetch_add(static_cast<std::uint64_t>(request_headers) + body.size(), std::memory_order_relaxed);
    traffic_->received.fetch_add(static_cast<std::uint64_t>(response_headers), std::memory_order_relaxed);
  }
  curl_multi_remove_handle(m, c);
  curl_slist_free_all(headers);
  curl_easy_cleanup(c);
  curl_multi_cleanup(m);
  return result;
}

}  // namespace kvferry::detail
