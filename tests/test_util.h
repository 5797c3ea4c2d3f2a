// Helpers shared by the suites: buffers with random content, agent pairs.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kvferry/kvferry.h"

namespace kvferry::testing {

// Page-aligned host buffer.
class Buffer {
 public:
  explicit Buffer(std::size_t size, std::uint8_t fill = 0) : size_(size) {
    void* p = nullptr;
    if (posix_memalign(&p, 4096, size) != 0) std::abort();
    data_.reset(static_cast<std::uint8_t*>(p));
    std::memset(p, fill, size);
  }
  std::uint8_t* data() { return data_.get(); }
  const std::uint8_t* data() const { return data_.get(); }
  std::size_t size() const { return size_; }
  std::uint64_t addr(std::size_t offset = 0) const { return reinterpret_cast<std::uint64_t>(data_.get()) + offset; }
  void randomize(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::size_t i = 0;
    for (; i + 8 <= size_; i += 8) {
      std::uint64_t v = rng();
      std::memcpy(data_.get() + i, &v, 8);
    }
    for (; i < size_; ++i) data_[i] = static_cast<std::uint8_t>(rng());
  }
  DescriptorList whole() const { return DescriptorList(MemoryKind::kDram, {Descriptor{addr(), size_, 0}}); }

 private:
  struct Free {
    void operator()(std::uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<std::uint8_t[], Free> data_;
  std::size_t size_;
};

// The backend the multi-process and failure suites run over: tcp, or the one
// KVFERRY_TEST_BACKEND names (scripts/test.sh runs them again over ucx).
inline std::string suite_backend() {
  const char* b = std::getenv("KVFERRY_TEST_BACKEND");
  return b && *b ? b : "tcp";
}

inline std::unique_ptr<Agent> make_agent(const std::string& name, const std::string& backend,
                                         std::chrono::milliseconds peer_timeout = std::chrono::milliseconds(5000)) {
  AgentOptions o;
  o.name = name;
  if (!backend.empty()) o.backends = {backend};
  o.peer_timeout = peer_timeout;
  auto a = Agent::create(o);
  EXPECT_TRUE(a.ok()) << a.status().to_string();
  return a.ok() ? std::move(a).value() : nullptr;
}

// A backend that links two agents of one process, and the memory kind it moves: the
// parameter of suites that run over every such backend.
struct AgentPairRoute {
  std::string backend;
  MemoryKind kind;
};
inline void PrintTo(const AgentPairRoute& r, std::ostream* os) { *os << r.backend << " " << to_string(r.kind); }

inline const AgentPairRoute kAgentPairRoutes[] = {
    {"loopback", MemoryKind::kDram},
    {"tcp", MemoryKind::kDram},
    {"shm", MemoryKind::kDram},
#ifdef KVFERRY_HAVE_CUDA
    {"cuda_ipc", MemoryKind::kVram},
#endif
};

// Loads each agent's metadata into the other.
inline void introduce(Agent& a, Agent& b) {
  auto ma = a.local_metadata();
  auto mb = b.local_metadata();
  ASSERT_TRUE(ma.ok() && mb.ok());
  ASSERT_TRUE(a.load_remote(*mb).ok());
  ASSERT_TRUE(b.load_remote(*ma).ok());
}

#define KVF_ASSERT_OK(expr)                                  \
  do {                                                       \
    ::kvferry::Status kvf_s_ = (expr);                       \
    ASSERT_TRUE(kvf_s_.ok()) << kvf_s_.to_string();          \
  } while (0)

}  // namespace kvferry::testing
