// Agent methods for agents that meet over time: named regions, peer events, finding and
// waiting for peers, the metadata service and metrics (kvferry/agent.h, peer_events.h).
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "py_agent.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace kvferry::python {
namespace {

void bind_peer_events(nb::module_& m) {
  nb::enum_<PeerEventKind>(m, "PeerEventKind", "What happened to a peer (kvferry/peer_events.h).")
      .value("JOINED", PeerEventKind::kJoined)
      .value("UPDATED", PeerEventKind::kUpdated)
      .value("RESTARTED", PeerEventKind::kRestarted)
      .value("LEFT", PeerEventKind::kLeft)
      .def("__str__", [](PeerEventKind k) { return std::string(to_string(k)); });
  nb::class_<PeerEvent>(m, "PeerEvent", "A peer joined, changed, restarted or left; `revision` of its metadata.")
      .def_ro("kind", &PeerEvent::kind)
      .def_ro("peer", &PeerEvent::peer)
      .def_ro("revision", &PeerEvent::revision)
      .def("__repr__", [](const PeerEvent& e) {
        return "PeerEvent(" + std::string(to_string(e.kind)) + ", '" + e.peer + "', revision=" +
               std::to_string(e.revision) + ")";
      });
}

}  // namespace

void bind_cluster(nb::module_& m, nb::class_<PyAgent>& c) {
  bind_peer_events(m);
  c.def("instance_id", [](PyAgent& self) { return self.get()->instance_id(); },
        "128 random bits (32 hex digits) drawn at creation: tells a restarted peer apart.")
      .def(
          "remote_named_regions",
          [](PyAgent& self, const std::string& peer, const std::string& name) {
            return unwrap(self.get()->remote_named_regions(peer, name));
          },
          "peer"_a, "name"_a, "The regions a loaded peer registered under `name`, in its registration order.")
      .def(
          "remote_region_names",
          [](PyAgent& self, const std::string& peer) { return unwrap(self.get()->remote_region_names(peer)); },
          "peer"_a, "The region names a loaded peer announced, sorted.")
      .def(
          "sync_metadata",
          [](PyAgent& self, double timeout) {
            auto bound = millis_arg(timeout, "timeout");
            auto agent = self.get();
            nb::gil_scoped_release release;
            check(agent->sync_metadata(bound));
          },
          "timeout"_a = 5.0,
          "With a metadata service: waits (GIL released) until it holds everything registered and published so "
          "far. Returns at once without one.")
      .def("take_peer_events", [](PyAgent& self) { return self.get()->take_peer_events(); },
           "Drains the peer events recorded so far, oldest first.")
      .def(
          "wait_for_peer_events",
          [](PyAgent& self, double timeout) {
            auto agent = self.get();
            return interruptible_wait(seconds_arg(timeout, "timeout"), [&](std::chrono::nanoseconds slice) {
                     return agent->wait_for_peer_events(slice) ? Status::Ok() : Timeout("no peer event");
                   }).ok();
          },
          "timeout"_a, "Blocks (GIL released) until a peer event is pending or `timeout` s pass; returns whether one is.")
      .def(
          "find_peers", [](PyAgent& self, const std::string& prefix) { return self.get()->find_peers(prefix); },
          "prefix"_a = "", "Loaded peers whose name starts with `prefix`, sorted.")
      .def(
          "wait_for_peers",
          [](PyAgent& self, const std::string& prefix, std::size_t count, double timeout) {
            auto agent = self.get();
            std::vector<std::string> found;
            check(interruptible_wait(seconds_arg(timeout, "timeout"), [&](std::chrono::nanoseconds slice) {
              auto r = agent->wait_for_peers(prefix, count,
                                             std::chrono::duration_cast<std::chrono::milliseconds>(slice));
              if (!r.ok()) return r.status();
              found = std::move(r).value();
              return Status::Ok();
            }));
            return found;
          },
          "prefix"_a, "count"_a, "timeout"_a,
          "Waits (GIL released) until at least `count` loaded peers match `prefix`; returns them. Raises "
          "kvferry.Timeout naming how many were found.")
      .def("metrics_text", [](PyAgent& self) { return self.get()->metrics_text(); },
           "The Prometheus text served at /metrics.")
      .def("metrics_port", [](PyAgent& self) { return unwrap(self.get()->metrics_port()); },
           "The bound port of the metrics endpoint; kvferry.NotFound without metrics_address.");
}

}  // namespace kvferry::python
