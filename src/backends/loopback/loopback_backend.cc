#include "backends/loopback/loopback_backend.h"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <thread>

#include "core/backend_registry.h"
#include "core/byte_io.h"

namespace kvferry::detail {
namespace {

// The memory and inbox of one loopback backend, reachable by same-process peers.
class LoopbackEndpoint {
 public:
  explicit LoopbackEndpoint(const BackendContext& ctx) : name_(ctx.agent_name), deliver_(ctx.deliver_notification) {}

  void add(const RegionInfo& r) {
    std::unique_lock lock(mu_);
    regions_[r.id] = r;
  }
  void remove(std::uint64_t id) {
    std::unique_lock lock(mu_);  // waits for copies in progress on this endpoint
    regions_.erase(id);
  }
  // Runs `copy(remote_ptr)` for a piece only if it lies inside a registered region; the
  // shared lock keeps the region registered while the copy runs.
  template <typename F>
  Status with_region(std::uint64_t address, std::uint64_t length, F&& copy) {
    std::shared_lock lock(mu_);
    for (const auto& [id, r] : regions_) {
      if (r.kind == MemoryKind::kDram && address >= r.address && address - r.address <= r.length &&
          length <= r.address + r.length - address) {
        copy(reinterpret_cast<void*>(address));
        return Status::Ok();
      }
    }
    return RemoteError("peer '" + name_ + "' refused [0x" + std::to_string(address) + ", +" + std::to_string(length) +
                       "): not inside memory it registered");
  }
  Status deliver(std::string from, std::string message) { return deliver_(std::move(from), std::move(message)); }

 private:
  const std::string name_;
  const DeliverNotification deliver_;
  std::shared_mutex mu_;
  std::map<std::uint64_t, RegionInfo> regions_;
};

class Directory {
 public:
  static Directory& instance() {
    static Directory d;
    return d;
  }
  void put(std::uint64_t token, std::weak_ptr<LoopbackEndpoint> ep) {
    std::lock_guard lock(mu_);
    map_[token] = std::move(ep);
  }
  void erase(std::uint64_t token) {
    std::lock_guard lock(mu_);
    map_.erase(token);
  }
  std::shared_ptr<LoopbackEndpoint> get(std::uint64_t token) {
    std::lock_guard lock(mu_);
    auto it = map_.find(token);
    return it == map_.end() ? nullptr : it->second.lock();
  }

 private:
  std::mutex mu_;
  std::map<std::uint64_t, std::weak_ptr<LoopbackEndpoint>> map_;
};

// One connection = one worker thread that copies jobs in order.
class LoopbackConnection final : public BackendConnection {
 public:
  LoopbackConnection(std::string self_name, std::weak_ptr<LoopbackEndpoint> target)
      : self_name_(std::move(self_name)), target_(std::move(target)), worker_([this] { run(); }) {}

  ~LoopbackConnection() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      cancel_current_ = true;
    }
    cv_.notify_all();
    worker_.join();
    for (auto& job : queue_) job->finish(PeerLost("loopback connection closed"));
  }

  Status post(const std::shared_ptr<TransferJob>& job) override {
    KVF_RETURN_IF_ERROR(health());
    {
      std::lock_guard lock(mu_);
      queue_.push_back(job);
    }
    cv_.notify_all();
    return Status::Ok();
  }

  void cancel(const std::shared_ptr<TransferJob>& job) override {
    std::unique_lock lock(mu_);
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      if (*it == job) {
        queue_.erase(it);
        lock.unlock();
        job->finish(Cancelled("transfer cancelled"));
        return;
      }
    }
    if (current_ == job) {
      cancel_current_ = true;
      idle_cv_.wait(lock, [&] { return current_ != job; });
    }
  }

  Status notify(std::string_view message) override {
    auto target = target_.lock();
    if (!target) return PeerLost("loopback peer is gone");
    return target->deliver(self_name_, std::string(message));
  }

  Status health() const override {
    return target_.expired() ? PeerLost("loopback peer is gone") : Status::Ok();
  }

 private:
  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      current_ = queue_.front();
      queue_.pop_front();
      cancel_current_ = false;
      lock.unlock();
      Status s = execute(*current_);
      lock.lock();
      if (cancel_current_ && s.ok()) s = Cancelled("transfer cancelled");
      auto job = std::move(current_);
      current_.reset();
      idle_cv_.notify_all();
      lock.unlock();
      job->finish(std::move(s));
      lock.lock();
    }
  }

  Status execute(const TransferJob& job) {
    auto target = target_.lock();
    if (!target) return PeerLost("loopback peer is gone");
    constexpr std::uint64_t kSlice = 4u << 20;  // cancel is honoured between slices
    for (const TransferPiece& p : job.pieces()) {
      for (std::uint64_t off = 0; off < p.length; off += kSlice) {
        if (cancelled()) return Cancelled("transfer cancelled");
        std::uint64_t n = std::min(kSlice, p.length - off);
        auto* local = reinterpret_cast<std::uint8_t*>(p.local + off);
        Status s = target->with_region(p.remote + off, n, [&](void* remote) {
          if (job.op() == TransferOp::kRead) std::memcpy(local, remote, n);
          else std::memcpy(remote, local, n);
        });
        if (!s.ok()) return s;
      }
    }
    // A notification the peer cannot keep fails the request with its reason.
    if (job.notification()) return target->deliver(self_name_, *job.notification());
    return Status::Ok();
  }

  bool cancelled() {
    std::lock_guard lock(mu_);
    return cancel_current_;
  }

  const std::string self_name_;
  const std::weak_ptr<LoopbackEndpoint> target_;
  std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::shared_ptr<TransferJob>> queue_;
  std::shared_ptr<TransferJob> current_;
  bool cancel_current_ = false;
  bool stopping_ = false;
  std::thread worker_;
};

class LoopbackBackend final : public Backend {
 public:
  explicit LoopbackBackend(const BackendContext& ctx)
      : ctx_(ctx), endpoint_(std::make_shared<LoopbackEndpoint>(ctx)), token_(std::random_device{}() * 0x9E3779B97F4A7C15ull ^ std::random_device{}()) {
    Directory::instance().put(token_, endpoint_);
  }
  ~LoopbackBackend() override { Directory::instance().erase(token_); }

  std::string_view name() const override { return "loopback"; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.local_kinds = {MemoryKind::kDram};
    c.remote_kinds = {MemoryKind::kDram};
    c.same_process_only = true;
    c.notifications = true;
    return c;
  }
  CostModel cost_model() const override { return CostModel{2.0, 0.02, 15.0}; }
  Status register_region(const RegionInfo& r) override {
    endpoint_->add(r);
    return Status::Ok();
  }
  Status deregister_region(std::uint64_t id) override {
    endpoint_->remove(id);
    return Status::Ok();
  }
  std::vector<std::uint8_t> connection_info() const override {
    ByteWriter w;
    w.u64(token_);
    return w.take();
  }
  Result<std::unique_ptr<BackendConnection>> connect(const PeerEndpoint& peer) override {
    ByteReader r(peer.connection_info);
    std::uint64_t token = r.u64();
    if (!r.ok()) return Corrupt("loopback: bad connection info from '" + peer.agent_name + "'");
    auto target = Directory::instance().get(token);
    if (!target) return Unavailable("loopback: peer '" + peer.agent_name + "' is not in this process");
    return std::unique_ptr<BackendConnection>(new LoopbackConnection(ctx_.agent_name, target));
  }

 private:
  BackendContext ctx_;
  std::shared_ptr<LoopbackEndpoint> endpoint_;
  std::uint64_t token_;
};

}  // namespace

std::unique_ptr<Backend> make_loopback_backend(const BackendContext& ctx) {
  return std::make_unique<LoopbackBackend>(ctx);
}

void register_loopback_backend(BackendRegistry& registry) {
  BackendFactory f;
  f.name = "loopback";
  f.description = "dram <-> dram between agents of one process (memcpy on a worker thread)";
  f.probe = [] { return Status::Ok(); };
  f.create = [](const BackendContext& ctx) -> Result<std::unique_ptr<Backend>> { return make_loopback_backend(ctx); };
  registry.add(std::move(f));
}

}  // namespace kvferry::detail
