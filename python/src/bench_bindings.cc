// The C++ reference for the Python binding's overhead: the same index transfer created
// and posted from C++, timed the way python/kvferry/bench.py times the Python call, in the
// same process and run (docs/benchmarks.md, "Python package").
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <time.h>

#include <chrono>
#include <tuple>

#include "memory_args.h"
#include "py_agent.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace kvferry::python {
namespace {

// CPU time of the calling thread: what the call costs, unaffected by other processes
// taking the CPU away (the shared build machine runs many).
std::int64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// Times `create()` + post, `iterations` times, with the GIL released; each request is
// waited for (untimed) before the next. Returns [(create_ns, post_ns, thread_cpu_ns)].
template <typename Create>
std::vector<std::tuple<std::int64_t, std::int64_t, std::int64_t>> time_create_post(std::uint32_t iterations,
                                                                                 std::chrono::nanoseconds bound,
                                                                                 Create&& create) {
  std::vector<std::tuple<std::int64_t, std::int64_t, std::int64_t>> times;
  nb::gil_scoped_release release;
  for (std::uint32_t i = 0; i < iterations; ++i) {
    const std::int64_t cpu0 = thread_cpu_ns();
    auto t0 = std::chrono::steady_clock::now();
    Result<TransferRequest> request = create();
    auto t1 = std::chrono::steady_clock::now();
    if (!request.ok()) throw StatusError(request.status());
    check(request->post());
    auto t2 = std::chrono::steady_clock::now();
    const std::int64_t cpu = thread_cpu_ns() - cpu0;
    check(request->wait(bound));  // not timed: the bytes themselves
    times.emplace_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count(),
                       std::chrono::duration_cast<std::chrono::nanoseconds>(t2 - t1).count(), cpu);
  }
  return times;
}

}  // namespace

void bind_bench(nb::module_& m) {
  m.def(
      "_cxx_create_post",
      [](PyAgent& agent, nb::handle op, const PreparedList& local, nb::handle local_indices,
         const PreparedList& remote, nb::handle remote_indices, std::uint32_t iterations, double timeout) {
        TransferOp o = op_of(op);
        IndexArray li(local_indices), ri(remote_indices);
        auto a = agent.get();
        return time_create_post(iterations, seconds_arg(timeout, "timeout"),
                                [&] { return a->create_transfer(o, local, li.span(), remote, ri.span()); });
      },
      "agent"_a, "op"_a, "local"_a, "local_indices"_a, "remote"_a, "remote_indices"_a, "iterations"_a,
      "timeout"_a = 60.0,
      "Benchmark helper: create_transfer + post of an index transfer from C++, `iterations` times; returns "
      "[(create_ns, post_ns, thread_cpu_ns)]. Each request is waited for (untimed) before the next.");
  m.def(
      "_cxx_create_post_lanes",
      [](PyAgent& agent, nb::handle op, const PreparedLanes& local, const PreparedLanes& remote,
         nb::handle local_blocks, nb::handle remote_blocks, std::uint32_t iterations, double timeout) {
        TransferOp o = op_of(op);
        IndexArray lb(local_blocks), rb(remote_blocks);
        auto a = agent.get();
        const LaneTransfer t{lb.span(), rb.span()};
        return time_create_post(iterations, seconds_arg(timeout, "timeout"),
                                [&] { return a->create_transfer(o, local, remote, t); });
      },
      "agent"_a, "op"_a, "local"_a, "remote"_a, "local_blocks"_a, "remote_blocks"_a, "iterations"_a,
      "timeout"_a = 60.0, "The same for a strided transfer over every lane.");
  m.def(
      "_cxx_post_wait",
      [](TransferRequest& request, std::uint32_t iterations, double timeout) {
        const auto bound = seconds_arg(timeout, "timeout");
        std::vector<std::tuple<std::int64_t, std::int64_t>> times;
        nb::gil_scoped_release release;
        for (std::uint32_t i = 0; i < iterations; ++i) {
          const auto t0 = std::chrono::steady_clock::now();
          check(request.post());
          check(request.wait(bound));
          const auto t1 = std::chrono::steady_clock::now();
          times.emplace_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count(),
                             static_cast<std::int64_t>(request.telemetry().transfer_ns));
        }
        return times;
      },
      "request"_a, "iterations"_a, "timeout"_a = 60.0,
      "Benchmark helper: posts `request` and waits for it from C++, `iterations` times; returns "
      "[(post_to_return_ns, transfer_ns)] (transfer_ns: post until the backend finished it, so the "
      "difference is the waiter's wake-up).");
}

}  // namespace kvferry::python
