// PeerProcess: spawns tests/test_peer.cc (the `kvferry_test_peer` executable) as a child
// process, reads its READY line, and kills and reaps it on destruction (no orphans, no
// zombies). Also the checksum both sides of the multi-process tests compute.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cinttypes>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kvferry/kvferry.h"

namespace kvferry::testing {

// FNV-1a over 64-bit little-endian words (then the tail bytes one at a time): fast
// enough for 1 GiB, and any changed byte changes the result with high probability.
inline std::uint64_t word_fnv1a64(const std::uint8_t* data, std::size_t size) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  constexpr std::uint64_t kPrime = 0x100000001b3ull;
  std::size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, data + i, 8);
    h ^= w;
    h *= kPrime;
  }
  for (; i < size; ++i) {
    h ^= data[i];
    h *= kPrime;
  }
  return h;
}

// What kvferry_test_peer answers to "checksum" when its buffer holds these bytes.
inline std::string checksum_text(const std::uint8_t* data, std::size_t size) {
  char hex[32];
  std::snprintf(hex, sizeof hex, "%016" PRIx64, word_fnv1a64(data, size));
  return std::string("checksum ") + hex;
}
inline std::string checksum_text(const std::vector<std::uint8_t>& v) { return checksum_text(v.data(), v.size()); }

struct PeerOptions {
  std::string name = "peer";
  std::uint64_t size = 64u << 20;
  std::uint64_t seed = 1;
  // "random": mt19937_64(seed) 8 bytes at a time (as test_util.h Buffer::randomize);
  // "zero": zero-filled (quick to start for very large buffers).
  std::string fill = "random";
  std::chrono::milliseconds peer_timeout{5000};
  std::chrono::seconds lifetime{120};
  std::chrono::milliseconds ready_timeout{10000};
  std::string backend = "tcp";
  bool shared = false;  // the peer's pool comes from Agent::allocate_shared_memory
  // "vram": the peer's pool is cudaMalloc'd on GPU `device` (builds with CUDA only).
  std::string mem = "dram";
  int device = 0;
  // Before READY, push our metadata to the side channel on 127.0.0.1:push_to (0: none);
  // the outcome goes to stderr ("push: ...").
  std::uint16_t push_to = 0;
  // RLIMIT_NOFILE of the peer (0: inherited).
  int max_fds = 0;
  // AgentOptions::secret of the peer (printable text here); empty: none.
  std::string secret;
};

class PeerProcess {
 public:
  // Spawns the peer and waits for its READY line. On failure returns null and sets *error.
  static std::unique_ptr<PeerProcess> spawn(const PeerOptions& options, std::string* error);
  ~PeerProcess();  // SIGKILL (if still running) + waitpid
  PeerProcess(const PeerProcess&) = delete;
  PeerProcess& operator=(const PeerProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }
  std::uint16_t port() const { return port_; }           // side channel
  std::uint16_t data_port() const { return data_port_; }  // tcp backend listener, 0 if unknown
  std::uint64_t address() const { return address_; }     // the registered buffer
  std::uint64_t size() const { return size_; }

  // Sends a signal (no-op once reaped). Returns whether kill() succeeded.
  bool signal(int sig);
  // Running: not exited (a zombie counts as exited; it is reaped here).
  bool alive();
  // Waits up to `timeout` for the child to exit; true if it has (and it is reaped).
  bool wait_exit(std::chrono::milliseconds timeout, int* wait_status = nullptr);

 private:
  PeerProcess() = default;
  bool try_reap(int* wait_status);

  pid_t pid_ = -1;
  bool reaped_ = false;
  int stdin_fd_ = -1;   // our end of the child's stdin; closing it tells the child to exit
  int stdout_fd_ = -1;  // our end of the child's stdout
  std::string name_;
  std::uint16_t port_ = 0;
  std::uint16_t data_port_ = 0;
  std::uint64_t address_ = 0;
  std::uint64_t size_ = 0;
};

// Notifications of one agent, kept in arrival order so that waiting for one peer's reply
// does not lose another's message.
class Inbox {
 public:
  explicit Inbox(Agent& agent) : agent_(agent) {}
  // The next message from `from`, waiting up to `timeout`; nullopt on timeout.
  std::optional<std::string> next_from(const std::string& from, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      for (auto it = kept_.begin(); it != kept_.end(); ++it) {
        if (it->from == from) {
          std::string m = std::move(it->message);
          kept_.erase(it);
          return m;
        }
      }
      auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return std::nullopt;
      if (agent_.wait_for_notifications(deadline - now))
        for (auto& n : agent_.take_notifications()) kept_.push_back(std::move(n));
    }
  }

 private:
  Agent& agent_;
  std::deque<Notification> kept_;
};

}  // namespace kvferry::testing
