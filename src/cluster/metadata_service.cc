#include "cluster/metadata_service.h"

#include <algorithm>

#include "core/metadata.h"

namespace kvferry::detail {

namespace {
constexpr std::chrono::milliseconds kWatchPoll{100};   // how soon a stop is noticed
constexpr std::chrono::milliseconds kRetryPause{250};  // after etcd failed us
// etcd deletes an expired lease's keys at a check that runs every 500 ms, then streams the
// deletion to watchers; the lease asked of etcd is one second shorter than the bound we
// promise, so a dead agent is seen as gone within the promise, not up to 0.5 s after it.
constexpr std::chrono::seconds kExpiryMargin{1};
// Renewals per TTL: each costs ~150 bytes each way; four leave three missed or slow
// renewals of slack before a live agent's lease lapses on a starved machine.
constexpr int kRenewalsPerTtl = 4;
constexpr std::chrono::milliseconds kRenewalRetry{100};  // after a failed renewal
}  // namespace

Result<MetadataServiceUrl> parse_metadata_service_url(std::string_view url) {
  const std::string text(url);
  constexpr std::string_view kScheme = "etcd://";
  if (url.substr(0, kScheme.size()) != kScheme)
    return InvalidArgument("metadata service '" + text + "': expected etcd://HOST:PORT/NAMESPACE");
  std::string_view rest = url.substr(kScheme.size());
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos)
    return InvalidArgument("metadata service '" + text + "': no namespace (etcd://HOST:PORT/NAMESPACE)");
  MetadataServiceUrl out;
  std::string hostport(rest.substr(0, slash));
  const auto colon = hostport.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == hostport.size())
    return InvalidArgument("metadata service '" + text + "': expected HOST:PORT after etcd://");
  out.host = hostport.substr(0, colon);
  if (out.host.size() > 2 && out.host.front() == '[' && out.host.back() == ']')
    out.host = out.host.substr(1, out.host.size() - 2);
  unsigned long port = 0;
  for (char c : hostport.substr(colon + 1)) {
    if (c < '0' || c > '9' || port > 65535) return InvalidArgument("metadata service '" + text + "': bad port");
    port = port * 10 + static_cast<unsigned long>(c - '0');
  }
  if (port == 0 || port > 65535) return InvalidArgument("metadata service '" + text + "': bad port");
  out.port = static_cast<std::uint16_t>(port);
  std::string ns(rest.substr(slash + 1));
  while (!ns.empty() && ns.back() == '/') ns.pop_back();
  if (ns.empty() || ns.size() > 200)
    return InvalidArgument("metadata service '" + text + "': the namespace must be 1..200 bytes");
  for (char c : ns)
    if (c < 0x21 || c > 0x7e) return InvalidArgument("metadata service '" + text + "': namespace must be printable");
  out.name_space = std::move(ns);
  return out;
}

Result<std::unique_ptr<MetadataService>> MetadataService::start(MetadataServiceUrl url, std::string agent_name,
                                                                std::chrono::seconds lease_ttl,
                                                                std::chrono::milliseconds timeout,
                                                                MetadataServiceHooks hooks) {
  if (lease_ttl < kExpiryMargin + std::chrono::seconds(1))
    return InvalidArgument("metadata service: metadata_lease must be at least 2 s (got " +
                           std::to_string(lease_ttl.count()) + " s)");
  std::unique_ptr<MetadataService> s(new MetadataService());
  s->url_ = std::move(url);
  s->agent_name_ = std::move(agent_name);
  s->ttl_ = lease_ttl - kExpiryMargin;
  s->timeout_ = timeout;
  s->hooks_ = std::move(hooks);
  s->lease_client_ = std::make_unique<EtcdClient>(s->url_.host, s->url_.port, timeout, s->traffic_);
  const std::string where = "metadata service etcd://" + s->lease_client_->endpoint() + "/" + s->url_.name_space;
  auto lease = s->lease_client_->lease_grant(s->ttl_.count());
  if (!lease.ok()) return lease.status().with_context(where);
  s->lease_ = lease->id;
  if (lease->ttl_seconds > s->ttl_.count()) {
    (void)s->lease_client_->lease_revoke(s->lease_);
    return InvalidArgument(where + ": etcd granted a " + std::to_string(lease->ttl_seconds) + " s lease for the " +
                           std::to_string(s->ttl_.count()) + " s asked, so a dead agent could not be seen gone within " +
                           "metadata_lease " + std::to_string(lease_ttl.count()) + " s: raise metadata_lease to " +
                           std::to_string(lease->ttl_seconds + kExpiryMargin.count()) +
                           " s, or lower etcd's --election-timeout (its lease floor is 1.5 election timeouts)");
  }
  if (Status st = s->publish(*s->lease_client_); !st.ok()) {
    (void)s->lease_client_->lease_revoke(s->lease_);
    return st.with_context(where);
  }
  std::int64_t revision = 0;
  if (Status st = s->load_all(*s->lease_client_, &revision); !st.ok()) {
    (void)s->lease_client_->lease_revoke(s->lease_);
    return st.with_context(where);
  }
  s->lease_thread_ = std::thread([p = s.get()] { p->lease_loop(); });
  s->watch_thread_ = std::thread([p = s.get(), revision] { p->watch_loop(revision); });
  return s;
}

MetadataService::~MetadataService() { stop(); }

void MetadataService::stop() {
  std::call_once(stopped_, [this] {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (watch_thread_.joinable()) watch_thread_.join();
    if (lease_thread_.joinable()) lease_thread_.join();
    if (lease_ != 0 && lease_client_) (void)lease_client_->lease_revoke(lease_);  // deletes our key
  });
}

void MetadataService::republish() {
  {
    std::lock_guard lock(mu_);
    dirty_ = true;
    ++requested_;
  }
  cv_.notify_all();
}

Status MetadataService::wait_published(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mu_);
  const std::uint64_t target = requested_;
  if (cv_.wait_until(lock, deadline, [&] { return published_ >= target || stop_.load(); }) && !stop_)
    return Status::Ok();
  return Timeout("metadata service: our latest metadata is not published yet (etcd at " +
                 lease_client_->endpoint() + (healthy_ ? ")" : " does not answer)"));
}

Status MetadataService::publish(EtcdClient& client) {
  KVF_ASSIGN_OR_RETURN(std::vector<std::uint8_t> md, hooks_.local_metadata());
  return client.put(url_.agents_prefix() + agent_name_, md, lease_);
}

bool MetadataService::name_of(const std::string& key, std::string* name) const {
  const std::string prefix = url_.agents_prefix();
  if (key.size() <= prefix.size() || key.compare(0, prefix.size(), prefix) != 0) return false;
  *name = key.substr(prefix.size());
  return validate_agent_name(*name).ok();
}

Status MetadataService::load_all(EtcdClient& client, std::int64_t* revision) {
  KVF_ASSIGN_OR_RETURN(std::vector<EtcdKeyValue> kvs, client.range_prefix(url_.agents_prefix(), revision));
  std::vector<std::string> now;
  for (const EtcdKeyValue& kv : kvs) {
    std::string name;
    if (!name_of(kv.key, &name) || name == agent_name_) continue;
    now.push_back(name);
    hooks_.peer_put(name, kv.value);
  }
  std::sort(now.begin(), now.end());
  for (const std::string& gone : known_)
    if (!std::binary_search(now.begin(), now.end(), gone)) hooks_.peer_gone(gone);
  known_ = std::move(now);
  return Status::Ok();
}

void MetadataService::lease_loop() {
  const auto period = std::chrono::duration_cast<std::chrono::milliseconds>(ttl_) / kRenewalsPerTtl;
  auto next_renewal = std::chrono::steady_clock::now() + period;
  while (!stop_) {
    bool publish_now = false;
    std::uint64_t target = 0;
    {
      std::unique_lock lock(mu_);
      cv_.wait_until(lock, next_renewal, [&] { return stop_.load() || dirty_; });
      if (stop_) return;
      publish_now = std::exchange(dirty_, false);
      target = requested_;
    }
    if (std::chrono::steady_clock::now() >= next_renewal) {
      next_renewal = std::chrono::steady_clock::now() + period;
      auto ttl = lease_client_->lease_keepalive(lease_);
      if (!ttl.ok() && ttl.status().code() == StatusCode::kPeerLost) {
        // We were silent past the TTL (a stall, or etcd lost the lease): join again.
        auto fresh = lease_client_->lease_grant(ttl_.count());
        if (fresh.ok()) {
          lease_ = fresh->id;
          publish_now = true;
        }
        if (fresh.ok()) ttl = ttl_.count();
        else ttl = fresh.status();
      }
      healthy_ = ttl.ok();
      if (!ttl.ok()) {
        renewal_failures_.fetch_add(1);
        next_renewal = std::chrono::steady_clock::now() + kRenewalRetry;
      }
      if (!ttl.ok() && hooks_.warn) hooks_.warn(ttl.status().with_context("renewing the metadata lease"));
    }
    if (publish_now) {
      Status s = publish(*lease_client_);
      if (s.code() == StatusCode::kPeerLost) {  // our lease ran out (a stall): join again
        if (auto fresh = lease_client_->lease_grant(ttl_.count()); fresh.ok()) {
          lease_ = fresh->id;
          s = publish(*lease_client_);
        }
      }
      if (!s.ok()) {
        if (hooks_.warn) hooks_.warn(s.with_context("publishing metadata"));
        std::lock_guard lock(mu_);
        dirty_ = true;  // try again at the next renewal
      } else {
        {
          std::lock_guard lock(mu_);
          published_ = std::max(published_, target);
        }
        cv_.notify_all();
      }
    }
  }
}

void MetadataService::watch_loop(std::int64_t revision) {
  EtcdClient client(url_.host, url_.port, timeout_, traffic_);
  std::int64_t seen = revision;
  bool resync = false;
  while (!stop_) {
    if (resync) {
      // The stream broke: what happened meanwhile is read again from a fresh range.
      std::int64_t rev = 0;
      if (Status s = load_all(client, &rev); !s.ok()) {
        if (hooks_.warn) hooks_.warn(s.with_context("reading the namespace again"));
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, kRetryPause, [&] { return stop_.load(); });
        continue;
      }
      seen = rev;
      resync = false;
    }
    auto on_event = [&](const EtcdEvent& ev) {
      seen = std::max(seen, ev.kv.mod_revision);
      std::string name;
      if (!name_of(ev.kv.key, &name) || name == agent_name_) return;
      auto it = std::lower_bound(known_.begin(), known_.end(), name);
      if (ev.deleted) {
        if (it != known_.end() && *it == name) known_.erase(it);
        hooks_.peer_gone(name);
      } else {
        if (it == known_.end() || *it != name) known_.insert(it, name);
        hooks_.peer_put(name, ev.kv.value);
      }
    };
    const std::uint64_t failures = renewal_failures_.load();
    Status s = client.watch(
        url_.agents_prefix(), seen + 1, on_event,
        [&] { return !stop_.load() && renewal_failures_.load() == failures; }, kWatchPoll);
    if (stop_) return;
    if (s.ok()) s = Unavailable("etcd did not answer a lease renewal; the watch starts over");
    if (hooks_.warn) hooks_.warn(s.with_context("watching the namespace"));
    resync = true;
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, kRetryPause, [&] { return stop_.load(); });
  }
}

}  // namespace kvferry::detail
