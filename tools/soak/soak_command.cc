// `kvferry soak` options, and the `kvferry soak-peer` process (a target whose memory
// starts as mt19937_64(seed) words, so that the soak knows every byte of it).
#include <sys/mman.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

#include "common/child_process.h"
#include "soak/soak_command.h"

namespace kvferry::cli {

long long parse_duration_ms(const std::string& text) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (...) {
    return -1;
  }
  const std::string unit = text.substr(used);
  double scale = unit.empty() || unit == "s" ? 1000 : unit == "ms" ? 1 : unit == "m" ? 60'000 : unit == "h" ? 3'600'000 : -1;
  if (scale < 0 || v < 0) return -1;
  return static_cast<long long>(v * scale);
}

CLI::App* add_soak_command(CLI::App& app, SoakOptions& o) {
  CLI::App* c = app.add_subcommand(
      "soak", "Random verified transfers over every usable backend for a while, with peers killed and restarted "
              "and requests cancelled; reports bytes, errors by cause, corrupt bytes, RSS and descriptors");
  c->add_option("--duration", o.duration, "How long: 90s, 10m, 1h")->capture_default_str();
  c->add_option("--backends", o.backends, "Backends to use (default: every usable one of loopback, tcp, shm, file)")
      ->delimiter(',');
  c->add_option("--seed", o.seed, "Seed of every random choice")->capture_default_str();
  c->add_option("--kill-every", o.kill_every, "Kill and restart a peer process this often")->capture_default_str();
  c->add_option("--report-every", o.report_every, "Print a progress line this often")->capture_default_str();
  c->add_option("--cancel-permille", o.cancel_permille, "Requests cancelled in flight, per mille")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  c->add_option("--peer-bytes", o.peer_bytes, "Memory of each peer")->check(CLI::Range(1u << 20, 1u << 30))
      ->capture_default_str();
  c->add_option("--directory", o.directory, "Directory of the file backend's file")->capture_default_str();
  return c;
}

CLI::App* add_soak_peer_command(CLI::App& app, SoakPeerOptions& o) {
  CLI::App* c = app.add_subcommand("soak-peer", "A peer process of `kvferry soak`");
  c->group("");  // hidden
  c->add_option("--name", o.name)->required();
  c->add_option("--backend", o.backend)->required();
  c->add_option("--bytes", o.bytes)->required();
  c->add_option("--seed", o.seed)->required();
  c->add_option("--report-fd", o.report_fd)->required();
  return c;
}

int run_soak_peer_command(const SoakPeerOptions& o) {
  AgentOptions ao;
  ao.name = o.name;
  ao.backends = {o.backend};
  ao.peer_timeout = std::chrono::milliseconds(2000);
  auto agent = Agent::create(ao);
  if (!agent.ok()) {
    std::fprintf(stderr, "kvferry soak-peer: %s\n", agent.status().to_string().c_str());
    return 1;
  }
  SharedMemory shared;
  std::uint8_t* mem = nullptr;
  if (o.backend == "shm") {  // memfd memory: the path copies go through mappings
    auto pool = (*agent)->allocate_shared_memory(o.bytes);
    if (!pool.ok()) return std::fprintf(stderr, "kvferry soak-peer: %s\n", pool.status().to_string().c_str()), 1;
    shared = std::move(pool).value();
    mem = static_cast<std::uint8_t*>(shared.data());
  } else {
    void* p = ::mmap(nullptr, o.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return std::fprintf(stderr, "kvferry soak-peer: mmap failed\n"), 1;
    mem = static_cast<std::uint8_t*>(p);
  }
  std::mt19937_64 rng(o.seed);
  for (std::uint64_t i = 0; i + 8 <= o.bytes; i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(mem + i, &v, 8);
  }
  Status s = (*agent)->register_memory(DescriptorList(MemoryKind::kDram, {make_descriptor(mem, o.bytes)}));
  auto port = s.ok() ? (*agent)->listen("127.0.0.1", 0) : Result<std::uint16_t>(s);
  if (!port.ok()) return std::fprintf(stderr, "kvferry soak-peer: %s\n", port.status().to_string().c_str()), 1;
  if (!write_report(o.report_fd, ControlType::kListening,
                    {{"port", *port}, {"address", reinterpret_cast<std::uint64_t>(mem)}})
           .ok())
    return 1;
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // until the soak kills or ends us
}

}  // namespace kvferry::cli
