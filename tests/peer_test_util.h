// Helpers of the suites that run kvferry_test_peer processes (failure, multi-process):
// spawning a peer over the suite's backend, naming a range of its buffer, timing.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

#include "peer_process.h"
#include "test_util.h"

namespace kvferry::testing {

inline std::unique_ptr<PeerProcess> spawn_peer(PeerOptions o) {
  if (o.backend == "tcp") o.backend = suite_backend();
  std::string error;
  auto p = PeerProcess::spawn(o, &error);
  EXPECT_TRUE(p) << "cannot start kvferry_test_peer: " << error;
  return p;
}

inline long long ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count();
}

// A peer process's pool (of `kind`, on GPU `device` for vram) as a remote list.
inline DescriptorList peer_range(const PeerProcess& p, MemoryKind kind, std::uint32_t device, std::uint64_t offset,
                                 std::uint64_t length) {
  return DescriptorList(kind, {Descriptor{p.address() + offset, length, device}});
}
inline DescriptorList remote_range(const PeerProcess& p, std::uint64_t offset, std::uint64_t length) {
  return peer_range(p, MemoryKind::kDram, 0, offset, length);
}

}  // namespace kvferry::testing
