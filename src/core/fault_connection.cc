#include "core/fault_connection.h"

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/backend_settings.h"
#include "core/hook_gate.h"

namespace kvferry::detail {

Result<FaultConfig> parse_fault_settings(const std::map<std::string, std::string>& settings) {
  static const std::set<std::string> kKeys = {"seed", "delay_us", "fail", "truncate", "stall", "kill", "every",
                                              "backends"};
  for (const auto& [key, value] : settings)
    if (!kKeys.count(key))
      return InvalidArgument("setting 'fault." + key +
                             "' is unknown (fault accepts: seed, delay_us, fail, truncate, stall, kill, every, backends)");
  FaultConfig c;
  KVF_ASSIGN_OR_RETURN(c.seed, integer_setting(settings, "fault", "seed", 0, UINT64_MAX, 1));
  KVF_ASSIGN_OR_RETURN(c.delay_us, integer_setting(settings, "fault", "delay_us", 0, 10'000'000, 0));
  KVF_ASSIGN_OR_RETURN(c.every, integer_setting(settings, "fault", "every", 0, 1'000'000, 0));
  std::uint32_t* per_mille[] = {&c.fail, &c.truncate, &c.stall, &c.kill};
  const char* names[] = {"fail", "truncate", "stall", "kill"};
  for (int i = 0; i < 4; ++i) {
    KVF_ASSIGN_OR_RETURN(std::uint64_t v, integer_setting(settings, "fault", names[i], 0, 1000, 0));
    *per_mille[i] = static_cast<std::uint32_t>(v);
  }
  if (auto it = settings.find("backends"); it != settings.end()) {
    std::stringstream list(it->second);
    for (std::string name; std::getline(list, name, ',');)
      if (!name.empty()) c.backends.insert(name);
  }
  return c;
}

namespace {
enum class Fault { kNone, kFail, kTruncate, kStall, kKill };

}  // namespace

class FaultConnection::State : public std::enable_shared_from_this<State> {
 public:
  State(std::shared_ptr<BackendConnection> inner, FaultConfig cfg, std::chrono::milliseconds peer_timeout)
      : inner_(std::move(inner)), cfg_(std::move(cfg)), peer_timeout_(peer_timeout), rng_(cfg_.seed) {
    timer_ = std::thread([this] { run_timer(); });
  }

  const std::shared_ptr<HookGate>& gate() const { return gate_; }

  void stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    timer_.join();
    // Every job still here ends now: inner jobs in flight are cancelled first (quiesced on
    // return), those held by a delay never ran, stalled ones had finished inside.
    std::lock_guard posting(post_mu_);
    std::vector<Flight> flights;
    {
      std::lock_guard lock(mu_);
      for (auto& [outer, f] : flights_) flights.push_back(f);
    }
    for (auto& f : flights) {
      if (f.inner && !f.stalled) inner_->cancel(f.inner);
      finish(f.outer, PeerLost("fault injection: connection closed"));
    }
  }

  Status post(const std::shared_ptr<TransferJob>& job) {
    KVF_RETURN_IF_ERROR(health());
    const Fault fault = draw();
    if (fault == Fault::kFail) {
      job->finish(RemoteError("fault injection: job failed before any byte moved"));
      return Status::Ok();
    }
    if (fault == Fault::kKill) {
      kill("fault injection: connection killed");
      job->finish(health());
      return Status::Ok();
    }
    auto pieces = job->shared_pieces();
    std::uint64_t bytes = job->total_bytes();
    std::optional<std::string> note = job->notification();
    if (fault == Fault::kTruncate) {
      std::vector<TransferPiece> half;
      std::uint64_t want = std::max<std::uint64_t>(1, bytes / 2), got = 0;
      for (const TransferPiece& p : *pieces) {
        if (got == want) break;
        TransferPiece q = p;
        q.length = std::min(p.length, want - got);
        half.push_back(q);
        got += q.length;
      }
      pieces = std::make_shared<const PieceList>(std::move(half));
      bytes = got;
      note.reset();
    }
    std::weak_ptr<State> weak = shared_from_this();
    const std::uint64_t total = job->total_bytes();
    auto inner = std::make_shared<TransferJob>(
        job->op(), pieces, bytes, std::move(note), [weak, gate = gate_, job, fault, bytes, total](const Status& st) {
          if (!gate->enter()) return;  // the connection is being destroyed: stop() ends the job
          if (auto self = weak.lock()) self->inner_done(job, fault, bytes, total, st);
          gate->leave();
        });
    {
      std::lock_guard lock(mu_);
      flights_[job.get()] = Flight{job, nullptr, false};
    }
    if (cfg_.delay_us == 0) return start(job, inner);
    at(std::chrono::steady_clock::now() + std::chrono::microseconds(cfg_.delay_us),
       [weak, job, inner] {
         if (auto self = weak.lock()) (void)self->start(job, inner);
       });
    return Status::Ok();
  }

  void cancel(const std::shared_ptr<TransferJob>& job) {
    std::lock_guard posting(post_mu_);  // an inner job is cancelled only once it was posted
    std::shared_ptr<TransferJob> inner;
    {
      std::lock_guard lock(mu_);
      auto it = flights_.find(job.get());
      if (it != flights_.end()) {
        inner = it->second.inner;
        it->second.cancelled = true;
      }
    }
    if (inner) inner_->cancel(inner);  // on return the inner job touches nothing
    finish(job, Cancelled("transfer cancelled"));
  }

  Status health() const {
    {
      std::lock_guard lock(mu_);
      if (!killed_.ok()) return killed_;
    }
    return inner_->health();
  }

  BackendConnection& wrapped() { return *inner_; }

 private:
  struct Flight {
    std::shared_ptr<TransferJob> outer;
    std::shared_ptr<TransferJob> inner;  // null while delayed
    bool cancelled = false;
    bool stalled = false;
  };

  Fault draw() {
    std::vector<std::pair<Fault, std::uint32_t>> kinds;
    for (auto [f, p] : {std::pair{Fault::kFail, cfg_.fail}, std::pair{Fault::kTruncate, cfg_.truncate},
                        std::pair{Fault::kStall, cfg_.stall}, std::pair{Fault::kKill, cfg_.kill}})
      if (p > 0) kinds.emplace_back(f, p);
    if (kinds.empty()) return Fault::kNone;
    std::lock_guard lock(mu_);
    ++jobs_;
    if (cfg_.every > 0) {
      if (jobs_ % cfg_.every != 0) return Fault::kNone;
      return kinds[(jobs_ / cfg_.every - 1) % kinds.size()].first;
    }
    std::uint32_t roll = static_cast<std::uint32_t>(rng_() % 1000);
    for (auto [f, p] : kinds) {
      if (roll < p) return f;
      roll -= std::min(roll, p);
    }
    return Fault::kNone;
  }

  Status start(const std::shared_ptr<TransferJob>& job, const std::shared_ptr<TransferJob>& inner) {
    std::lock_guard posting(post_mu_);
    {
      std::lock_guard lock(mu_);
      auto it = flights_.find(job.get());
      if (it == flights_.end() || it->second.cancelled) return Status::Ok();  // cancelled while delayed
      if (!killed_.ok()) {
        flights_.erase(it);
        job->finish(killed_);
        return Status::Ok();
      }
      it->second.inner = inner;
    }
    Status s = inner_->post(inner);
    if (!s.ok()) finish(job, s);
    return Status::Ok();
  }

  void inner_done(const std::shared_ptr<TransferJob>& job, Fault fault, std::uint64_t moved, std::uint64_t total,
                  const Status& st) {
    if (!st.ok()) return finish(job, st);
    if (fault == Fault::kTruncate)
      return finish(job, RemoteError("fault injection: truncated after " + std::to_string(moved) + " of " +
                                     std::to_string(total) + " bytes"));
    if (fault == Fault::kStall) {
      {
        std::lock_guard lock(mu_);
        auto it = flights_.find(job.get());
        if (it == flights_.end()) return;
        it->second.stalled = true;
      }
      std::weak_ptr<State> weak = shared_from_this();
      at(std::chrono::steady_clock::now() + peer_timeout_, [weak, job, timeout = peer_timeout_] {
        if (auto self = weak.lock())
          self->finish(job, PeerLost("fault injection: no progress for " + std::to_string(timeout.count()) + " ms"));
      });
      return;
    }
    finish(job, Status::Ok());
  }

  void finish(const std::shared_ptr<TransferJob>& job, Status st) {
    {
      std::lock_guard lock(mu_);
      flights_.erase(job.get());
    }
    job->finish(std::move(st));
  }

  void kill(const std::string& why) {
    std::lock_guard posting(post_mu_);
    std::vector<Flight> flights;
    {
      std::lock_guard lock(mu_);
      if (!killed_.ok()) return;
      killed_ = PeerLost(why);
      for (auto& [outer, f] : flights_) flights.push_back(f);
    }
    for (auto& f : flights) {
      if (f.inner) inner_->cancel(f.inner);  // quiesced on return
      finish(f.outer, PeerLost(why));
    }
  }

  void at(std::chrono::steady_clock::time_point when, std::function<void()> fn) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      timers_.emplace(when, std::move(fn));
    }
    cv_.notify_all();
  }

  void run_timer() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      if (timers_.empty()) {
        cv_.wait(lock);
        continue;
      }
      auto next = timers_.begin();
      if (cv_.wait_until(lock, next->first) == std::cv_status::no_timeout && !stopping_) continue;
      if (stopping_) break;
      next = timers_.begin();
      if (next == timers_.end() || next->first > std::chrono::steady_clock::now()) continue;
      auto fn = std::move(next->second);
      timers_.erase(next);
      lock.unlock();
      fn();
      lock.lock();
    }
  }

  const std::shared_ptr<BackendConnection> inner_;
  const FaultConfig cfg_;
  const std::chrono::milliseconds peer_timeout_;

  // Held while an inner job is posted and while inner jobs are cancelled, so that a cancel
  // never overtakes the post it cancels. Never taken inside a job's hook.
  std::mutex post_mu_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::mt19937_64 rng_;
  std::uint64_t jobs_ = 0;
  Status killed_;
  std::unordered_map<const TransferJob*, Flight> flights_;
  std::multimap<std::chrono::steady_clock::time_point, std::function<void()>> timers_;
  bool stopping_ = false;
  const std::shared_ptr<HookGate> gate_ = std::make_shared<HookGate>();
  std::thread timer_;
};

FaultConnection::FaultConnection(std::shared_ptr<BackendConnection> inner, FaultConfig config,
                                 std::chrono::milliseconds peer_timeout)
    : state_(std::make_shared<State>(std::move(inner), std::move(config), peer_timeout)) {}

FaultConnection::~FaultConnection() {
  state_->stop();
  // No hook holds the State after this, so it dies here, on the caller's thread.
  state_->gate()->close_and_drain();
}

Status FaultConnection::post(const std::shared_ptr<TransferJob>& job) { return state_->post(job); }
void FaultConnection::cancel(const std::shared_ptr<TransferJob>& job) { state_->cancel(job); }
Status FaultConnection::notify(std::string_view message) {
  KVF_RETURN_IF_ERROR(state_->health());
  return state_->wrapped().notify(message);
}
Status FaultConnection::health() const { return state_->health(); }

}  // namespace kvferry::detail
