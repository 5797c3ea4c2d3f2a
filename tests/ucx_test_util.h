// Helpers of the ucx suites (ucx_links_test.cc, ucx_reactor_test.cc): whether the backend
// is built, agents over UCX's tcp transport on loopback (with memory registered), one
// verified-shape write.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "test_util.h"

namespace kvferry::testing {

inline bool ucx_built() {
  for (const BackendInfo& b : compiled_backends())
    if (b.name == "ucx") return true;
  return false;
}

// An agent with only `backend` ("ucx": over UCX's tcp transport on loopback).
inline std::unique_ptr<Agent> agent_with(const std::string& name, const std::string& backend = "ucx",
                                         std::size_t inbox = 1 << 16) {
  AgentOptions o;
  o.name = name;
  o.backends = {backend};
  o.max_inbox_notifications = inbox;
  if (backend == "ucx") o.backend_params = {{"ucx.tls", "tcp"}, {"ucx.devices", "lo"}};
  auto a = Agent::create(o);
  EXPECT_TRUE(a.ok()) << a.status().to_string();
  return a.ok() ? std::move(a).value() : nullptr;
}

inline DescriptorList slice(const Buffer& b, std::size_t offset, std::size_t length) {
  return DescriptorList(MemoryKind::kDram, {Descriptor{b.addr(offset), length, 0}});
}

// agent_with(name, "ucx", inbox) with all of `memory` registered; null (and a test
// failure) if either step failed.
inline std::unique_ptr<Agent> ucx_agent_serving(const std::string& name, const Buffer& memory,
                                                std::size_t inbox = 1 << 16) {
  auto a = agent_with(name, "ucx", inbox);
  if (!a) return nullptr;
  const Status registered = a->register_memory(slice(memory, 0, memory.size()));
  EXPECT_TRUE(registered.ok()) << registered.to_string();
  return registered.ok() ? std::move(a) : nullptr;
}

inline Status write_and_wait(Agent& from, const DescriptorList& local, const std::string& peer,
                             const DescriptorList& remote, const TransferOptions& o = {}) {
  auto t = from.create_transfer(TransferOp::kWrite, local, peer, remote, o);
  if (!t.ok()) return t.status().with_context("create_transfer");
  if (Status s = t->post(); !s.ok()) return s.with_context("post");
  return t->wait(std::chrono::seconds(10)).with_context("wait");
}

}  // namespace kvferry::testing
