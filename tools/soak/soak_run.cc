// `kvferry soak`: the driver. It keeps a model of every peer's memory (the bytes it wrote,
// or the seeded fill a peer starts with), so every read is verified byte for byte; bytes
// of a write that failed or was cancelled become unknown until written again.
// Process peers (tcp, shm) are `kvferry soak-peer` children, killed and restarted
// in turn; loopback has an in-process target; file uses a file of the agent itself.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <thread>

#include "common/child_process.h"
#include "kvferry/info.h"
#include "kvferry/kvferry.h"
#include "soak/soak_command.h"
#include "common/stop_signal.h"

namespace kvferry::cli {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
constexpr std::uint64_t kPage = 4096;
constexpr auto kPeerTimeout = 2000ms;

std::vector<std::uint8_t> seeded_bytes(std::uint64_t seed, std::uint64_t n) {
  std::vector<std::uint8_t> out(n);
  std::mt19937_64 rng(seed);
  for (std::uint64_t i = 0; i + 8 <= n; i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(out.data() + i, &v, 8);
  }
  return out;
}

std::uint64_t rss_bytes() {
  std::ifstream in("/proc/self/statm");
  std::uint64_t size = 0, resident = 0;
  in >> size >> resident;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

std::size_t open_fds() {
  std::size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

// Host memory of one agent, registered once.
struct Pool {
  std::uint8_t* data = nullptr;
  std::uint64_t size = 0;
  SharedMemory shared;
  std::vector<std::uint8_t> plain;
};

// One peer as the soak sees it: how to reach it, and what its memory holds.
struct Peer {
  std::string backend, name;
  std::uint64_t address = 0;  // of its memory (the file region's offset 0 for file)
  std::uint32_t device = 0;   // the file id for file
  MemoryKind kind = MemoryKind::kDram;
  std::vector<std::uint8_t> model;
  std::vector<bool> known;  // per page
  std::optional<ChildProcess> process;
  std::uint64_t seed = 0;
  // loopback: the target's memory and agent, in this process (the memory outlives it)
  std::vector<std::uint8_t> target_memory;
  std::unique_ptr<Agent> target;
};

struct Totals {
  std::uint64_t transfers = 0, bytes = 0, corrupt = 0, cancels = 0, kills = 0, restarts = 0;
  std::uint64_t verified_bytes = 0, done_after_kill = 0, changed_after_end = 0;
  std::map<std::string, std::uint64_t> errors;  // by status code, and backend
  // Reads in progress when their peer was killed that still completed, by backend: how
  // many, and the longest time from the kill to their completion being seen. Their bytes
  // are verified like any read (corrupt bytes count above).
  std::map<std::string, std::pair<std::uint64_t, double>> done_at_kill;
};

class Soak {
 public:
  explicit Soak(const SoakOptions& o) : o_(o), rng_(o.seed) {}

  int run() {
    const long long duration = parse_duration_ms(o_.duration), kill_every = parse_duration_ms(o_.kill_every),
                    report_every = parse_duration_ms(o_.report_every);
    if (duration <= 0 || kill_every <= 0 || report_every <= 0) {
      std::fprintf(stderr, "kvferry soak: --duration, --kill-every and --report-every take e.g. 90s, 10m, 1h\n");
      return 2;
    }
    if (Status s = start(); !s.ok()) {
      std::fprintf(stderr, "kvferry soak: %s\n", s.to_string().c_str());
      return 1;
    }
    install_stop_signal_handlers();
    const auto t0 = Clock::now(), end = t0 + std::chrono::milliseconds(duration);
    auto next_kill = t0 + std::chrono::milliseconds(kill_every);
    auto next_report = t0 + std::chrono::milliseconds(report_every);
    std::printf("kvferry soak: %s over %zu peer(s) (%s), seed %" PRIu64 "\n", o_.duration.c_str(), peers_.size(),
                backend_list().c_str(), o_.seed);
    std::printf("%8s %10s %12s %8s %8s %10s %6s\n", "time_s", "transfers", "MiB", "errors", "corrupt", "rss_MiB", "fds");
    sample(t0);
    while (Clock::now() < end && !stop_requested()) {
      if (Clock::now() >= next_kill) {
        kill_and_restart();
        next_kill += std::chrono::milliseconds(kill_every);
      }
      one_transfer();
      if (Clock::now() >= next_report) {
        sample(t0);
        next_report += std::chrono::milliseconds(report_every);
      }
    }
    sample(t0);
    return summary();
  }

 private:
  Status start() {
    std::vector<std::string> wanted = o_.backends;
    if (wanted.empty())
      for (const auto& b : compiled_backends())
        if (b.usable && (b.name == "loopback" || b.name == "tcp" || b.name == "shm" || b.name == "file"))
          wanted.push_back(b.name);
    for (const std::string& b : wanted) KVF_RETURN_IF_ERROR(start_backend(b).with_context("backend " + b));
    if (peers_.empty()) return Unavailable("no backend to soak");
    return Status::Ok();
  }

  Status start_backend(const std::string& b) {
    AgentOptions ao;
    ao.name = "soak-" + b;
    ao.backends = {b};
    if (b == "file") ao.backends.push_back("loopback");
    ao.peer_timeout = kPeerTimeout;
    KVF_ASSIGN_OR_RETURN(auto agent, Agent::create(ao));
    Pool& pool = pools_[b];
    pool.size = o_.peer_bytes;
    if (b == "shm") {
      KVF_ASSIGN_OR_RETURN(pool.shared, agent->allocate_shared_memory(pool.size));
      pool.data = static_cast<std::uint8_t*>(pool.shared.data());
    } else {
      pool.plain.assign(pool.size, 0);
      pool.data = pool.plain.data();
    }
    KVF_RETURN_IF_ERROR(agent->register_memory(DescriptorList(MemoryKind::kDram, {make_descriptor(pool.data, pool.size)})));
    agents_[b] = std::move(agent);
    if (b == "tcp" || b == "shm") {
      for (int i = 0; i < 2; ++i) {
        auto p = std::make_unique<Peer>();
        p->backend = b;
        p->name = b + "-peer-" + std::to_string(i);
        KVF_RETURN_IF_ERROR(spawn(*p));
        peers_.push_back(std::move(p));
      }
    } else if (b == "loopback") {
      auto p = std::make_unique<Peer>();
      p->backend = b;
      p->name = "loopback-target";
      KVF_ASSIGN_OR_RETURN(p->target, Agent::create(AgentOptions{.name = p->name, .backends = {"loopback"}}));
      p->target_memory = seeded_bytes(7, o_.peer_bytes);
      KVF_RETURN_IF_ERROR(p->target->register_memory(
          DescriptorList(MemoryKind::kDram, {make_descriptor(p->target_memory.data(), o_.peer_bytes)})));
      KVF_ASSIGN_OR_RETURN(auto md, p->target->local_metadata());
      KVF_RETURN_IF_ERROR(agents_[b]->load_remote(md).status());
      KVF_ASSIGN_OR_RETURN(auto back, agents_[b]->local_metadata());
      KVF_RETURN_IF_ERROR(p->target->load_remote(back).status());
      p->address = reinterpret_cast<std::uint64_t>(p->target_memory.data());
      p->model = p->target_memory;
      p->known.assign(o_.peer_bytes / kPage, true);
      peers_.push_back(std::move(p));
    } else if (b == "file") {
      auto p = std::make_unique<Peer>();
      p->backend = b;
      p->name = "soak-file";
      p->kind = MemoryKind::kFile;
      FileOpenOptions fo;
      fo.create = fo.truncate = true;
      fo.capacity = o_.peer_bytes;
      file_path_ = o_.directory + "/kvferry-soak-" + std::to_string(::getpid()) + ".data";
      KVF_ASSIGN_OR_RETURN(FileRegistration f, agents_[b]->register_file(file_path_, fo));
      p->address = f.region()[0].address;
      p->device = f.region()[0].device;
      p->model.assign(o_.peer_bytes, 0);
      p->known.assign(o_.peer_bytes / kPage, true);  // a fresh file reads as zeros
      peers_.push_back(std::move(p));
    } else {
      return NotSupported("the soak drives loopback, tcp, shm and file");
    }
    return Status::Ok();
  }

  Status spawn(Peer& p) {
    p.seed = rng_();
    KVF_ASSIGN_OR_RETURN(ChildProcess child,
                         ChildProcess::spawn_self({"soak-peer", "--name", p.name, "--backend", p.backend, "--bytes",
                                                   std::to_string(o_.peer_bytes), "--seed", std::to_string(p.seed)}));
    KVF_ASSIGN_OR_RETURN(ControlMessage report, child.read_report(10s));
    KVF_ASSIGN_OR_RETURN(const std::uint16_t port, listening_port(report));
    KVF_ASSIGN_OR_RETURN(const std::uint64_t address, control_uint(report.body, "address"));
    p.process.emplace(std::move(child));
    p.address = address;
    p.model = seeded_bytes(p.seed, o_.peer_bytes);
    p.known.assign(o_.peer_bytes / kPage, true);
    auto name = agents_[p.backend]->fetch_remote("127.0.0.1", static_cast<std::uint16_t>(port));
    if (!name.ok()) return name.status().with_context("loading " + p.name);
    return Status::Ok();
  }

  // Random runs of whole pages, non-overlapping on the peer, packed in our pool.
  struct Plan {
    DescriptorList local{MemoryKind::kDram}, remote{MemoryKind::kDram};
    std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;  // (remote offset, bytes)
    std::uint64_t local_offset = 0, bytes = 0;
  };

  // `local_at`: where in our pool the runs go (default: anywhere), at most `max_bytes`.
  Plan plan(const Peer& p, std::optional<std::uint64_t> local_at = {}, std::uint64_t max_bytes = ~0ull) {
    Plan out;
    out.remote = DescriptorList(p.kind);
    const std::uint64_t pages = o_.peer_bytes / kPage;
    const int k = 1 + static_cast<int>(rng_() % 32);
    std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;
    std::uint64_t planned = 0;
    for (int i = 0; i < k; ++i) {
      const std::uint64_t len = std::min<std::uint64_t>(pages / 8, 1 + rng_() % (1 + (rng_() % 2 ? 4 : 256)));
      if ((planned + len) * kPage > std::min(o_.peer_bytes / 2, max_bytes)) break;  // fits our pool with room to move
      const std::uint64_t at = rng_() % (pages - len);
      bool overlaps = false;
      for (auto& [a, l] : runs) overlaps = overlaps || (at < a + l && a < at + len);
      if (!overlaps) {
        runs.emplace_back(at, len);
        planned += len;
      }
    }
    std::uint64_t total = 0;
    for (auto& [a, l] : runs) total += l * kPage;
    out.local_offset = local_at ? *local_at : (rng_() % (o_.peer_bytes - total + 1)) / 64 * 64;  // any 64-byte alignment
    std::uint64_t off = out.local_offset;
    for (auto& [a, l] : runs) {
      out.local.add(reinterpret_cast<std::uint64_t>(pools_[p.backend].data) + off, l * kPage);
      out.remote.add(p.address + a * kPage, l * kPage, p.device);
      out.runs.emplace_back(a * kPage, l * kPage);
      off += l * kPage;
    }
    out.bytes = total;
    return out;
  }

  void count_error(const Peer& p, const Status& s) { totals_.errors[p.backend + " " + std::string(to_string(s.code()))]++; }

  void one_transfer() {
    Peer& p = *peers_[rng_() % peers_.size()];
    Agent& a = *agents_[p.backend];
    std::uint8_t* pool = pools_[p.backend].data;
    Plan pl = plan(p);
    const bool write = rng_() % 2;
    const bool cancel = rng_() % 1000 < o_.cancel_permille;
    std::uint8_t* local = pool + pl.local_offset;
    if (write) {
      for (std::uint64_t i = 0; i + 8 <= pl.bytes; i += 8) {
        const std::uint64_t v = rng_();
        std::memcpy(local + i, &v, 8);
      }
    } else {
      std::memset(local, 0xEE, pl.bytes);
    }
    auto req = a.create_transfer(write ? TransferOp::kWrite : TransferOp::kRead, pl.local, p.name, pl.remote);
    Status s = req.ok() ? req->post() : req.status();
    if (s.ok() && cancel) {
      std::this_thread::sleep_for(std::chrono::microseconds(rng_() % 500));
      req->cancel();
      totals_.cancels++;
      s = req->state() == TransferState::kDone ? Status::Ok() : req->error();
      if (req->state() == TransferState::kInProgress) totals_.errors[p.backend + " in progress after cancel"]++;
    } else if (s.ok()) {
      s = req->wait(kPeerTimeout + 10s);
    }
    totals_.transfers++;
    if (!s.ok() && s.code() == StatusCode::kPeerLost && p.process) {
      count_error(p, s);
      return restart(p);  // a peer that died on its own (or was stopped): start it again
    }
    if (!s.ok()) {
      count_error(p, s);
      if (write)  // what the peer holds there is unknown now
        for (auto& [off, len] : pl.runs) std::fill_n(p.known.begin() + off / kPage, len / kPage, false);
      if (!write && cancel) check_unchanged(local, pl.bytes);
      return;
    }
    totals_.bytes += pl.bytes;
    if (!write) return verify_read(p, pl, local);
    std::uint64_t at = 0;
    for (auto& [off, len] : pl.runs) {
      std::memcpy(p.model.data() + off, local + at, len);
      std::fill_n(p.known.begin() + off / kPage, len / kPage, true);
      at += len;
    }
  }

  // A read reported done: every page of it whose content we know must match.
  void verify_read(Peer& p, const Plan& pl, const std::uint8_t* local) {
    std::uint64_t at = 0;
    for (auto& [off, len] : pl.runs) {
      for (std::uint64_t pg = 0; pg < len / kPage; ++pg) {
        if (!p.known[off / kPage + pg]) continue;
        const std::uint8_t* got = local + at + pg * kPage;
        const std::uint8_t* want = p.model.data() + off + pg * kPage;
        if (std::memcmp(got, want, kPage) != 0)
          for (std::uint64_t b = 0; b < kPage; ++b) totals_.corrupt += got[b] != want[b];
        totals_.verified_bytes += kPage;
      }
      at += len;
    }
  }

  // After a cancelled read returned, its destination must stay as it is.
  void check_unchanged(const std::uint8_t* local, std::uint64_t bytes) {
    std::vector<std::uint8_t> snapshot(local, local + bytes);
    std::this_thread::sleep_for(2ms);
    if (std::memcmp(snapshot.data(), local, bytes) != 0) totals_.changed_after_end++;
  }

  void restart(Peer& p) {
    p.process.reset();  // kills and reaps what is left of it
    if (Status s = spawn(p); !s.ok()) {
      std::fprintf(stderr, "kvferry soak: restarting %s: %s\n", p.name.c_str(), s.to_string().c_str());
      totals_.errors[p.backend + " restart failed"]++;
      return;
    }
    totals_.restarts++;
  }

  // Kills a peer process with transfers in flight: those still in progress must end in
  // kPeerLost (never done); then it is started again and loaded again.
  void kill_and_restart() {
    std::vector<Peer*> killable;
    for (auto& p : peers_)
      if (p->process) killable.push_back(p.get());
    if (killable.empty()) return;
    Peer& p = *killable[rng_() % killable.size()];
    Agent& a = *agents_[p.backend];
    std::uint8_t* pool = pools_[p.backend].data;
    // Eight reads into disjoint parts of our pool, so that each one's bytes can be
    // verified whatever the others did.
    constexpr int kReads = 8;
    const std::uint64_t share = o_.peer_bytes / kReads / kPage * kPage;
    std::vector<TransferRequest> reqs;
    std::vector<Plan> plans;
    for (int i = 0; i < kReads; ++i) {
      Plan pl = plan(p, share * static_cast<std::uint64_t>(i), share);
      if (pl.bytes == 0) continue;
      std::memset(pool + pl.local_offset, 0xEE, pl.bytes);
      auto r = a.create_transfer(TransferOp::kRead, pl.local, p.name, pl.remote);
      if (r.ok() && r->post().ok()) {
        reqs.push_back(std::move(r).value());
        plans.push_back(std::move(pl));
      }
    }
    ::kill(p.process->pid(), SIGKILL);
    const auto killed = Clock::now();
    totals_.kills++;
    std::vector<bool> in_flight;
    for (auto& r : reqs) in_flight.push_back(r.state() == TransferState::kInProgress);
    // When each request is first seen finished (polled every millisecond, bounded).
    std::vector<double> seen_ms(reqs.size(), -1);
    for (std::size_t left = reqs.size(); left > 0 && Clock::now() < killed + kPeerTimeout + 5s;) {
      for (std::size_t i = 0; i < reqs.size(); ++i)
        if (seen_ms[i] < 0 && reqs[i].state() != TransferState::kInProgress) {
          seen_ms[i] = std::chrono::duration<double, std::milli>(Clock::now() - killed).count();
          left--;
        }
      std::this_thread::sleep_for(1ms);
    }
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      Status s = reqs[i].wait(1s);
      if (!s.ok()) {
        count_error(p, s);
        continue;
      }
      // Done: whether before or after the kill, its bytes must be right.
      verify_read(p, plans[i], pool + plans[i].local_offset);
      if (in_flight[i]) {
        // It was in progress when kill(2) returned and still completed: over tcp the
        // peer may have sent every byte before it died; over shm the copy was confirmed
        // against the live process just before the kill. Seen late (far beyond the
        // race window) it would be a false success: the delay is recorded.
        auto& [n, worst_ms] = totals_.done_at_kill[p.backend];
        n++;
        worst_ms = std::max(worst_ms, seen_ms[i]);
        totals_.done_after_kill++;
      }
    }
    restart(p);
  }

  void sample(Clock::time_point t0) {
    const double t = std::chrono::duration<double>(Clock::now() - t0).count();
    std::uint64_t errors = 0;
    for (auto& [k, n] : totals_.errors) errors += n;
    samples_.push_back({t, rss_bytes(), open_fds()});
    std::printf("%8.0f %10" PRIu64 " %12.0f %8" PRIu64 " %8" PRIu64 " %10.1f %6zu\n", t, totals_.transfers,
                static_cast<double>(totals_.bytes) / (1 << 20), errors, totals_.corrupt,
                static_cast<double>(samples_.back().rss) / (1 << 20), samples_.back().fds);
    std::fflush(stdout);
  }

  int summary() {
    std::printf("\nkvferry soak: %" PRIu64 " transfers, %.1f GiB moved, %.1f GiB verified on read, %" PRIu64
                " cancels, %" PRIu64 " kills, %" PRIu64 " restarts\n",
                totals_.transfers, static_cast<double>(totals_.bytes) / (1u << 30),
                static_cast<double>(totals_.verified_bytes) / (1u << 30), totals_.cancels, totals_.kills,
                totals_.restarts);
    std::printf("errors by cause:\n");
    for (auto& [k, n] : totals_.errors) std::printf("  %-40s %10" PRIu64 "\n", k.c_str(), n);
    // Flat: compare the last sample with the one a tenth into the run (after warm-up).
    const Sample& first = samples_[std::min<std::size_t>(samples_.size() - 1, std::max<std::size_t>(1, samples_.size() / 10))];
    const Sample& last = samples_.back();
    const double rss_growth = static_cast<double>(last.rss) / static_cast<double>(std::max<std::uint64_t>(1, first.rss));
    const long long fd_growth = static_cast<long long>(last.fds) - static_cast<long long>(first.fds);
    std::printf("corrupt bytes: %" PRIu64 "; reads in progress at a kill that completed (bytes verified): %" PRIu64
                "; cancelled reads whose memory changed afterwards: %" PRIu64 "\n",
                totals_.corrupt, totals_.done_after_kill, totals_.changed_after_end);
    for (auto& [backend, seen] : totals_.done_at_kill)
      std::printf("  completed at a kill over %s: %" PRIu64 " read(s), seen done at most %.1f ms after the kill\n",
                  backend.c_str(), seen.first, seen.second);
    std::printf("RSS %.1f -> %.1f MiB (x%.3f), open descriptors %zu -> %zu (%+lld), from t=%.0f s to t=%.0f s\n",
                static_cast<double>(first.rss) / (1 << 20), static_cast<double>(last.rss) / (1 << 20), rss_growth,
                first.fds, last.fds, fd_growth, first.t, last.t);
    if (!file_path_.empty()) ::unlink(file_path_.c_str());
    // A read that completes at a kill is not wrong by itself (see kill_and_restart); its
    // bytes are verified, and the delay is printed above.
    const bool bad = totals_.corrupt > 0 || totals_.changed_after_end > 0;
    const bool leaky = fd_growth > 8 || rss_growth > 1.25;
    if (bad) std::printf("FAILED: data was wrong\n");
    if (leaky) std::printf("FAILED: RSS or descriptors grew\n");
    return bad ? 3 : leaky ? 1 : 0;
  }

  std::string backend_list() const {
    std::string out;
    for (auto& [b, a] : agents_) out += (out.empty() ? "" : ", ") + b;
    return out;
  }

  struct Sample {
    double t;
    std::uint64_t rss;
    std::size_t fds;
  };

  const SoakOptions& o_;
  std::mt19937_64 rng_;
  std::map<std::string, Pool> pools_;                     // by backend; outlive the agents
  std::map<std::string, std::unique_ptr<Agent>> agents_;  // by backend
  std::vector<std::unique_ptr<Peer>> peers_;
  std::string file_path_;
  Totals totals_;
  std::vector<Sample> samples_;
};

}  // namespace

int run_soak_command(const SoakOptions& options) { return Soak(options).run(); }

}  // namespace kvferry::cli
