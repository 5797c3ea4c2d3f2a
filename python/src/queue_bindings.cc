// Completion queues (kvferry/completion_queue.h): many requests in flight, their ends in
// one queue whose eventfd an event loop (select, asyncio's add_reader) waits on.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <limits>
#include <optional>

#include "kvferry/completion_queue.h"
#include "py_agent.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace kvferry::python {

void bind_completion_queue(nb::module_& m) {
  nb::class_<Completion>(m, "Completion", "The end of one posted request: its tag, how it ended, telemetry.")
      .def_ro("tag", &Completion::tag)
      .def_ro("peer", &Completion::peer)
      .def_ro("telemetry", &Completion::telemetry)
      .def_prop_ro("ok", [](const Completion& c) { return c.status.ok(); })
      .def(
          "error", [](const Completion& c) { return exception_for(c.status); },
          "The kvferry.Error of a failed request (not raised), or None when it is done.")
      .def("__repr__", [](const Completion& c) {
        return "Completion(tag=" + std::to_string(c.tag) + ", peer='" + c.peer + "', " +
               (c.status.ok() ? std::string("done") : c.status.to_string()) + ")";
      });

  nb::class_<CompletionQueue>(m, "CompletionQueue",
                              "Completions of requests posted into it (TransferRequest.post(queue), post_batch): "
                              "exactly one per post, however it ends. fileno() is readable while completions wait "
                              "(select, asyncio add_reader); only wait on it. Copies share one queue.")
      .def("__init__", [](CompletionQueue* self) { new (self) CompletionQueue(unwrap(CompletionQueue::create())); })
      .def("fileno", &CompletionQueue::fd, "The queue's eventfd: readable exactly while completions wait.")
      .def(
          "drain",
          [](CompletionQueue& q, std::optional<std::size_t> max) {
            return q.drain(max.value_or(std::numeric_limits<std::size_t>::max()));
          },
          "max"_a = nb::none(), nb::call_guard<nb::gil_scoped_release>(), "Takes up to `max` completions, oldest first.")
      .def(
          "wait",
          [](CompletionQueue& q, double timeout) {
            return interruptible_wait(seconds_arg(timeout, "timeout"), [&](std::chrono::nanoseconds slice) {
                     return q.wait(slice) ? Status::Ok() : Timeout("no completion");
                   }).ok();
          },
          "timeout"_a, "Blocks (GIL released) until a completion waits or `timeout` s pass; returns whether one waits.")
      .def("__len__", &CompletionQueue::size, "Completions waiting to be drained.")
      .def("in_flight", &CompletionQueue::in_flight, "Posts whose completion has not been pushed yet.");

  m.def(
      "post_batch",
      [](nb::handle requests, CompletionQueue& queue) {
        // References held while the GIL is released: the requests stay alive.
        std::vector<nb::object> held;
        std::vector<TransferRequest*> pointers;
        for (nb::handle r : requests) {
          pointers.push_back(nb::cast<TransferRequest*>(r));
          held.push_back(nb::borrow(r));
        }
        nb::gil_scoped_release release;
        std::size_t started = 0;
        for (TransferRequest* r : pointers)
          if (r->post(queue).ok()) ++started;
        return started;
      },
      "requests"_a, "queue"_a,
      "Posts every request; each one's completion goes to `queue`. Returns how many started; the others have "
      "already completed into the queue with the reason (len(requests) completions arrive in all).");
}

}  // namespace kvferry::python
