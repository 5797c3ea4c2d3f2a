// The Python Agent: the C++ Agent plus what keeps registered Python memory alive.
//
// - Registered arrays and tensors are referenced here from register_memory until
//   deregister_memory succeeds, so the garbage collector cannot free memory a peer may
//   still write into.
// - Methods take a shared_ptr copy of the Agent under the GIL and then release the GIL:
//   close() (or garbage collection) during a call on another thread waits for nothing
//   and frees the Agent only when the last call returns.
#pragma once

#include <nanobind/nanobind.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "errors.h"
#include "kvferry/agent.h"
#include "kvferry/transfer.h"

namespace kvferry::python {

// Something made on an Agent that must stop before the Agent does (a TP endpoint):
// PyAgent::close() closes it first.
class AgentDependent {
 public:
  virtual ~AgentDependent() = default;
  virtual void close() = 0;
};

class PyAgent {
 public:
  explicit PyAgent(std::shared_ptr<Agent> agent) : name_(agent->name()), agent_(std::move(agent)) {}
  ~PyAgent() { close(); }
  PyAgent(const PyAgent&) = delete;
  PyAgent& operator=(const PyAgent&) = delete;

  // The live Agent, or FailedPrecondition once closed.
  std::shared_ptr<Agent> get() const {
    if (!agent_) throw StatusError(FailedPrecondition("agent '" + name_ + "' is closed"));
    return agent_;
  }
  const std::string& name() const { return name_; }
  // Destroys the Agent (cancels its transfers, stops its threads) with the GIL released,
  // then drops the references to registered memory.
  void close();

  void keep(MemoryKind kind, const Descriptor& d, nanobind::object owner) {
    kept_[{static_cast<int>(kind), d.address, d.length, d.device}].push_back(std::move(owner));
  }
  void release(MemoryKind kind, const Descriptor& d) {
    kept_.erase({static_cast<int>(kind), d.address, d.length, d.device});
  }
  std::size_t kept_regions() const { return kept_.size(); }
  void add_dependent(std::weak_ptr<AgentDependent> d) { dependents_.push_back(std::move(d)); }

 private:
  using Key = std::tuple<int, std::uint64_t, std::uint64_t, std::uint32_t>;
  std::string name_;
  std::map<Key, std::vector<nanobind::object>> kept_;
  std::vector<std::weak_ptr<AgentDependent>> dependents_;
  std::shared_ptr<Agent> agent_;
};

// Seconds (float) -> a C++ duration; negative is InvalidArgument.
std::chrono::nanoseconds seconds_arg(double seconds, const char* what);
// The same, whole milliseconds (options that keep milliseconds).
inline std::chrono::milliseconds millis_arg(double seconds, const char* what) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(seconds_arg(seconds, what));
}

// Runs `wait(slice)` with the GIL released, in slices of at most 100 ms until it returns
// something other than Timeout or `timeout` passes, checking for Ctrl-C between slices.
template <typename F>
Status interruptible_wait(std::chrono::nanoseconds timeout, F&& wait) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  constexpr std::chrono::nanoseconds kSlice = std::chrono::milliseconds(100);
  for (;;) {
    auto left = deadline - std::chrono::steady_clock::now();
    if (left < std::chrono::nanoseconds::zero()) left = std::chrono::nanoseconds::zero();
    Status s;
    {
      nanobind::gil_scoped_release release;
      s = wait(std::min<std::chrono::nanoseconds>(left, kSlice));
    }
    if (s.code() != StatusCode::kTimeout || left <= kSlice) return s;
    if (PyErr_CheckSignals() != 0) throw nanobind::python_error();
  }
}

TransferOp op_of(nanobind::handle object);

void bind_types(nanobind::module_& m);
// Agent methods bound in their own files (cluster_bindings.cc, lanes_bindings.cc).
void bind_cluster(nanobind::module_& m, nanobind::class_<PyAgent>& c);
void bind_lanes(nanobind::module_& m, nanobind::class_<PyAgent>& c);
void bind_completion_queue(nanobind::module_& m);
void bind_tp(nanobind::module_& m);
void bind_agent(nanobind::module_& m);
void bind_kv(nanobind::module_& m);
void bind_offload(nanobind::module_& m);
void bind_bench(nanobind::module_& m);

}  // namespace kvferry::python
