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

}  // namespace

void bind_bench(nb::module_& m) {
  m.def(
      "_cxx_create_post",
      [](PyAgent& agent, nb::handle op, const PreparedList& local, nb::handle local_indices,
         const PreparedList& remote, nb::handle remote_indices, std::uint32_t iterations, double timeout) {
        TransferOp o = op_of(op);
        IndexArray li(local_indices), ri(remote_indices);
        auto bound = seconds_arg(timeout, "timeout");
        auto a = agent.get();
        std::vector<std::tuple<std::int64_t, std::int64_t, std::int64_t>> times;  // create, post, CPU ns
        nb::gil_scoped_release release;
        for (std::uint32_t i = 0; i < iterations; ++i) {
          const std::int64_t cpu0 = thread_cpu_ns();
          auto t0 = std::chrono::steady_clock::now();
          Result<TransferRequest> request = a->create_transfer(o, local, li.span(), remote, ri.span());
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
      },
      "agent"_a, "op"_a, "local"_a, "local_indices"_a, "remote"_a, "remote_indices"_a, "iterations"_a,
      "timeout"_a = 60.0,
      "Benchmark helper: create_transfer + post of an index transfer from C++, `iterations` times; returns "
      "[(create_ns, post_ns, thread_cpu_ns)]. Each request is waited for (untimed) before the next.");
}

}  // namespace kvferry::python
