// The target process of `kvferry bench --mem vram` (bench_vram.h) and how the initiator
// starts it and talks to it.
#ifdef KVFERRY_HAVE_CUDA

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "bench/bench_vram.h"
#include "common/child_process.h"
#include "bench/bench_vram_pool.h"
#include "common/host_pool.h"


namespace kvferry::cli {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;


// The target's pool: GPU memory, or host memory (shared memory when the backend is shm,
// so that the initiator can map it).
class TargetPool {
 public:
  static Result<TargetPool> allocate(const BenchOptions& o, Agent& agent) {
    TargetPool p;
    if (o.peer_mem == "vram") {
      KVF_ASSIGN_OR_RETURN(auto v, VramPool::allocate(o.pool_shape(), o.device, o.layer_tensors));
      p.vram_.emplace(std::move(v));
    } else {
      KVF_ASSIGN_OR_RETURN(auto h, HostPool::allocate(o.pool_shape(), 0xA5, o.backend == "shm" ? &agent : nullptr));
      p.host_.emplace(std::move(h));
    }
    return p;
  }
  DescriptorList region() const { return vram_ ? vram_->region() : host_->region(); }
  // What the initiator needs to find every layer: one address, or one per layer tensor.
  std::vector<std::uint64_t> addresses() const {
    if (vram_) return vram_->one_allocation() ? std::vector{vram_->layer_bases().front()} : vram_->layer_bases();
    return {host_->address()};
  }
  Status fill(std::uint64_t seed) {
    if (vram_) return vram_->fill_pattern(seed);
    fill_pattern_bytes(host_->base(), host_->bytes(), seed);
    return Status::Ok();
  }
  Status poison() {
    if (vram_) return vram_->poison();
    std::memset(host_->base(), 0xA5, host_->bytes());
    return Status::Ok();
  }
  Result<std::uint64_t> checksum() const {
    if (vram_) return vram_->checksum();
    return checksum_bytes(host_->base(), host_->bytes());
  }

 private:
  std::optional<VramPool> vram_;
  std::optional<HostPool> host_;
};

std::string answer(TargetPool& pool, const std::string& m) {
  unsigned port = 0;
  std::uint64_t bytes = 0;
  if (m.rfind("fill ", 0) == 0) {
    Status s = pool.fill(std::strtoull(m.c_str() + 5, nullptr, 10));
    return s.ok() ? "filled" : s.to_string();
  }
  if (m == "poison") {
    Status s = pool.poison();
    return s.ok() ? "poisoned" : s.to_string();
  }
  if (m == "checksum") {
    auto sum = pool.checksum();
    return sum.ok() ? checksum_answer(*sum) : sum.status().to_string();
  }
  if (std::sscanf(m.c_str(), "sink %u %" SCNu64, &port, &bytes) == 2 ||
      std::sscanf(m.c_str(), "source %u %" SCNu64, &port, &bytes) == 2) {
    Status s = serve_socket_stream(static_cast<std::uint16_t>(port), bytes, m[1] == 'o');
    return s.ok() ? "streamed" : s.to_string();
  }
  return "unknown " + m;
}

}  // namespace

int run_vram_target(const BenchOptions& o) {
  AgentOptions ao;
  ao.name = "vram-target";
  ao.backends = {o.backend};
  ao.backend_params = o.local_params;
  auto agent = Agent::create(ao);
  if (!agent.ok()) return std::fprintf(stderr, "vram target: %s\n", agent.status().to_string().c_str()), 1;
  Agent& a = **agent;
  auto pool = TargetPool::allocate(o, a);
  if (!pool.ok()) return std::fprintf(stderr, "vram target: %s\n", pool.status().to_string().c_str()), 1;
  if (Status s = a.register_memory(pool->region()); !s.ok())
    return std::fprintf(stderr, "vram target: register: %s\n", s.to_string().c_str()), 1;
  auto port = a.listen("127.0.0.1", 0);
  if (!port.ok()) return std::fprintf(stderr, "vram target: listen: %s\n", port.status().to_string().c_str()), 1;
  // One allocation: its address; per-layer tensors (--layer-tensors): every layer's base too.
  nlohmann::json ready = {{"port", *port}, {"pool_address", pool->addresses().front()}};
  if (const auto bases = pool->addresses(); bases.size() > 1) ready["layer_bases"] = bases;
  if (Status s = write_report(o.report_fd, ControlType::kListening, ready); !s.ok())
    return std::fprintf(stderr, "vram target: %s\n", s.to_string().c_str()), 1;
  // Spawned as a ChildProcess: the kernel kills us if the initiator dies.
  for (;;) {
    if (!a.wait_for_notifications(100ms)) continue;
    for (auto& n : a.take_notifications()) {
      if (n.message == "quit") return 0;
      (void)a.notify(n.from, answer(*pool, n.message));
    }
  }
}

std::string checksum_answer(std::uint64_t sum) {
  char b[32];
  std::snprintf(b, sizeof b, "%016" PRIx64, sum);
  return std::string("checksum ") + b;
}

VramTarget::~VramTarget() {
  if (child) (void)child->wait_for_exit(2s);  // it was told to quit; then terminated
}

Status spawn_vram_target(const BenchOptions& o, int peer_device, VramTarget* t) {
  std::vector<std::string> args = {"bench", "--mem", "vram", "--vram-target", "--backend", o.backend,
                                   "--device", std::to_string(peer_device), "--peer-mem", o.peer_mem,
                                   "--layers", std::to_string(o.layers), "--blocks", std::to_string(o.blocks),
                                   "--block-size", std::to_string(o.block_size)};
  if (o.layer_tensors) args.push_back("--layer-tensors");
  for (const auto& p : o.params) {
    args.push_back("--param");
    args.push_back(p);
  }
  KVF_ASSIGN_OR_RETURN(ChildProcess child, ChildProcess::spawn_self(std::move(args)));
  t->child.emplace(std::move(child));
  KVF_ASSIGN_OR_RETURN(ControlMessage report, t->child->read_report(60s));
  KVF_ASSIGN_OR_RETURN(t->port, listening_port(report));
  KVF_ASSIGN_OR_RETURN(std::uint64_t pool_address, control_uint(report.body, "pool_address"));
  std::vector<std::uint64_t> reported{pool_address};
  if (auto it = report.body.find("layer_bases"); it != report.body.end()) {
    if (!it->is_array()) return Corrupt("vram target: layer_bases is not a list");
    reported.clear();
    for (const auto& base : *it) {
      if (!base.is_number_unsigned()) return Corrupt("vram target: a layer base is not an unsigned integer");
      reported.push_back(base.get<std::uint64_t>());
    }
  }
  t->layer_bases = VramPool::layer_bases_of(o.pool_shape(), reported);
  if (t->layer_bases.empty())
    return Corrupt("vram target: " + std::to_string(reported.size()) + " layer bases for " +
                   std::to_string(o.pool_shape().layers) + " layers");
  return Status::Ok();
}

std::string ask_vram_target(Agent& a, const std::string& message) {
  if (!a.notify("vram-target", message).ok()) return "notify failed";
  return await_vram_target(a);
}

std::string await_vram_target(Agent& a) {
  const auto deadline = Clock::now() + 120s;
  while (Clock::now() < deadline) {
    if (!a.wait_for_notifications(1s)) continue;
    for (auto& n : a.take_notifications())
      if (n.from == "vram-target") return n.message;
  }
  return "no answer";
}

}  // namespace kvferry::cli
#endif  // KVFERRY_HAVE_CUDA
