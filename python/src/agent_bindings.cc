// kvferry.Agent: the whole C++ Agent API with its names. Blocking calls release the GIL.
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include "memory_args.h"
#include "py_agent.h"
#include "request_args.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace kvferry::python {

void PyAgent::close() {
  std::vector<std::weak_ptr<AgentDependent>> dependents = std::move(dependents_);
  for (auto& weak : dependents)
    if (std::shared_ptr<AgentDependent> d = weak.lock()) d->close();
  std::shared_ptr<Agent> agent = std::move(agent_);
  if (agent) {
    nb::gil_scoped_release release;
    agent.reset();  // the last reference, unless a call on another thread still runs
  }
  kept_.clear();
}

namespace {

std::span<const std::uint8_t> byte_span(const nb::bytes& b) {
  return {reinterpret_cast<const std::uint8_t*>(b.c_str()), b.size()};
}

nb::bytes to_bytes(const std::vector<std::uint8_t>& v) { return nb::bytes(v.data(), v.size()); }

std::unique_ptr<PyAgent> make_agent(std::string name, std::optional<std::vector<std::string>> backends,
                                    std::optional<std::map<std::string, std::string>> params, double peer_timeout,
                                    double connect_timeout, std::size_t max_notification_bytes,
                                    std::size_t max_inbox_notifications, std::string metadata_service,
                                    double metadata_lease, std::string metrics_address) {
  AgentOptions options;
  options.name = std::move(name);
  if (backends) options.backends = std::move(*backends);
  if (params) options.backend_params = std::move(*params);
  options.peer_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(seconds_arg(peer_timeout, "peer_timeout"));
  options.connect_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(seconds_arg(connect_timeout, "connect_timeout"));
  options.max_notification_bytes = max_notification_bytes;
  options.max_inbox_notifications = max_inbox_notifications;
  options.metadata_service = std::move(metadata_service);
  if (!(metadata_lease >= 0) || metadata_lease != static_cast<double>(static_cast<std::int64_t>(metadata_lease)))
    throw StatusError(InvalidArgument("metadata_lease must be whole seconds, got " + std::to_string(metadata_lease)));
  options.metadata_lease = std::chrono::seconds(static_cast<std::int64_t>(metadata_lease));
  options.metrics_address = std::move(metrics_address);
  Result<std::unique_ptr<Agent>> agent = [&] {
    nb::gil_scoped_release release;
    return Agent::create(std::move(options));
  }();
  return std::make_unique<PyAgent>(std::shared_ptr<Agent>(unwrap(std::move(agent))));
}

void bind_registration(nb::class_<PyAgent>& c) {
  c.def(
       "register_memory",
       [](PyAgent& self, nb::handle regions, nb::handle kind, std::optional<std::string> name) {
         std::vector<nb::object> owners;
         DescriptorList list = regions_of(regions, kind_of(kind), &owners);
         auto agent = self.get();
         {
           nb::gil_scoped_release release;
           check(name ? agent->register_memory(list, *name) : agent->register_memory(list));
         }
         // Every region of an array or tensor keeps it alive until deregistered.
         if (owners.size() == list.size())
           for (std::size_t i = 0; i < list.size(); ++i)
             if (!owners[i].is_none()) self.keep(list.kind(), list[i], std::move(owners[i]));
       },
       "regions"_a, "kind"_a = nb::none(), "name"_a = nb::none(),
       "Registers memory, one region per item: a numpy array, a torch tensor (CPU or CUDA), any DLPack or "
       "__cuda_array_interface__ object, an (address, length[, device]) tuple, a DescriptorList, or a list of "
       "them. `kind` ('dram', 'vram') overrides the kind found (tuples default to dram). `name` (e.g. "
       "'kv.layer.17') travels in the metadata: peers find the regions with remote_named_regions. Arrays and "
       "tensors stay referenced until deregistered.")
      .def(
          "deregister_memory",
          [](PyAgent& self, nb::handle regions, nb::handle kind) {
            DescriptorList list = regions_of(regions, kind_of(kind), nullptr);
            auto agent = self.get();
            {
              nb::gil_scoped_release release;
              check(agent->deregister_memory(list));
            }
            for (const Descriptor& d : list) self.release(list.kind(), d);
          },
          "regions"_a, "kind"_a = nb::none(), "Deregisters regions registered before (the same objects or extents).")
      .def(
          "allocate_shared_memory",
          [](PyAgent& self, std::size_t bytes) { return unwrap(self.get()->allocate_shared_memory(bytes)); },
          "bytes"_a, nb::call_guard<nb::gil_scoped_release>())
      .def(
          "register_file",
          [](PyAgent& self, const std::string& path, bool create, bool truncate, bool read_only,
             std::uint64_t capacity, bool preallocate, bool direct) {
            FileOpenOptions o{create, truncate, read_only, capacity, preallocate, direct};
            auto agent = self.get();
            nb::gil_scoped_release release;
            return unwrap(agent->register_file(path, o));
          },
          "path"_a, "create"_a = false, "truncate"_a = false, "read_only"_a = false, "capacity"_a = 0,
          "preallocate"_a = true, "direct"_a = true,
          "Opens `path` and registers it as one `file` region (kvferry/file.h).")
      .def(
          "register_file_descriptor",
          [](PyAgent& self, int fd, bool read_only, std::uint64_t capacity, bool preallocate, bool direct) {
            FileOpenOptions o{false, false, read_only, capacity, preallocate, direct};
            auto agent = self.get();
            nb::gil_scoped_release release;
            return unwrap(agent->register_file_descriptor(fd, o));
          },
          "fd"_a, "read_only"_a = false, "capacity"_a = 0, "preallocate"_a = true, "direct"_a = true)
      .def(
          "deregister_file",
          [](PyAgent& self, std::uint32_t file_id) {
            auto agent = self.get();
            nb::gil_scoped_release release;
            check(agent->deregister_file(file_id));
          },
          "file_id"_a);
}

void bind_metadata(nb::class_<PyAgent>& c) {
  c.def("local_metadata", [](PyAgent& self) { return to_bytes(unwrap(self.get()->local_metadata())); })
      .def(
          "load_remote",
          [](PyAgent& self, nb::bytes metadata) {
            auto agent = self.get();
            nb::gil_scoped_release release;
            return unwrap(agent->load_remote(byte_span(metadata)));
          },
          "metadata"_a, "Loads a peer's metadata bytes; returns its name.")
      .def(
          "forget_remote",
          [](PyAgent& self, const std::string& peer) {
            auto agent = self.get();
            nb::gil_scoped_release release;
            check(agent->forget_remote(peer));
          },
          "peer"_a)
      .def("remote_agents", [](PyAgent& self) { return self.get()->remote_agents(); })
      .def(
          "remote_regions", [](PyAgent& self, const std::string& peer) { return unwrap(self.get()->remote_regions(peer)); },
          "peer"_a)
      .def(
          "set_metadata_entry",
          [](PyAgent& self, const std::string& key, nb::bytes value) {
            check(self.get()->set_metadata_entry(key, byte_span(value)));
          },
          "key"_a, "value"_a)
      .def(
          "remote_metadata_entry",
          [](PyAgent& self, const std::string& peer, const std::string& key) {
            return to_bytes(unwrap(self.get()->remote_metadata_entry(peer, key)));
          },
          "peer"_a, "key"_a)
      .def(
          "listen",
          [](PyAgent& self, const std::string& address, std::uint16_t port) {
            auto agent = self.get();
            nb::gil_scoped_release release;
            return unwrap(agent->listen(address, port));
          },
          "address"_a = "127.0.0.1", "port"_a = 0, "Listens for peers' metadata and notifications; returns the port.")
      .def(
          "fetch_remote",
          [](PyAgent& self, const std::string& host, std::uint16_t port, bool push_local, double timeout) {
            auto bound = std::chrono::duration_cast<std::chrono::milliseconds>(seconds_arg(timeout, "timeout"));
            auto agent = self.get();
            nb::gil_scoped_release release;
            return unwrap(agent->fetch_remote(host, port, push_local, bound));
          },
          "host"_a, "port"_a, "push_local"_a = true, "timeout"_a = 5.0,
          "Exchanges metadata with a listening peer (GIL released, up to `timeout` s); returns its name.");
}

void bind_transfers(nb::class_<PyAgent>& c) {
  c.def(
       "prepare_local",
       [](PyAgent& self, nb::handle descriptors, nb::handle kind) {
         DescriptorList list = descriptors_of(descriptors, kind_of(kind));
         auto agent = self.get();
         nb::gil_scoped_release release;
         return unwrap(agent->prepare_local(list));
       },
       "descriptors"_a, "kind"_a = nb::none(),
       "Validates a DescriptorList, an (N, 2) / (N, 3) integer array or a list of (address, length[, device]) "
       "once, for index transfers.")
      .def(
          "prepare_remote",
          [](PyAgent& self, const std::string& peer, nb::handle descriptors, nb::handle kind) {
            DescriptorList list = descriptors_of(descriptors, kind_of(kind));
            auto agent = self.get();
            nb::gil_scoped_release release;
            return unwrap(agent->prepare_remote(peer, list));
          },
          "peer"_a, "descriptors"_a, "kind"_a = nb::none())
      .def(
          "create_transfer",
          [](PyAgent& self, nb::handle op, const PreparedList& local, nb::handle local_indices,
             const PreparedList& remote, nb::handle remote_indices, nb::handle notification, std::uint64_t tag,
             std::string backend) {
            TransferOp o = op_of(op);
            IndexArray li(local_indices), ri(remote_indices);
            TransferOptions options = transfer_options(notification, tag, std::move(backend));
            auto agent = self.get();
            nb::gil_scoped_release release;
            return unwrap(agent->create_transfer(o, local, li.span(), remote, ri.span(), std::move(options)));
          },
          "op"_a, "local"_a, "local_indices"_a, "remote"_a, "remote_indices"_a, nb::kw_only(),
          "notification"_a = nb::none(), "tag"_a = 0, "backend"_a = "",
          "Index transfer (the hot path): pairs local[local_indices[i]] with remote[remote_indices[i]]. Index "
          "arrays: uint32 C-contiguous numpy arrays are used in place; other integer arrays and lists are "
          "converted once. `notification` (str or bytes) reaches the peer after all bytes; `tag` (64-bit) rides with "
          "it and with the request's completion.")
      .def(
          "create_transfer",
          [](PyAgent& self, nb::handle op, nb::handle local, const std::string& peer, nb::handle remote,
             nb::handle notification, std::uint64_t tag, std::string backend, nb::handle local_kind,
             nb::handle remote_kind) {
            TransferOp o = op_of(op);
            DescriptorList l = descriptors_of(local, kind_of(local_kind));
            DescriptorList r = descriptors_of(remote, kind_of(remote_kind));
            TransferOptions options = transfer_options(notification, tag, std::move(backend));
            auto agent = self.get();
            nb::gil_scoped_release release;
            return unwrap(agent->create_transfer(o, l, peer, r, std::move(options)));
          },
          "op"_a, "local"_a, "peer"_a, "remote"_a, nb::kw_only(), "notification"_a = nb::none(), "tag"_a = 0,
          "backend"_a = "",
          "local_kind"_a = nb::none(), "remote_kind"_a = nb::none(),
          "Pairwise transfer of local[i] with the peer's remote[i] (DescriptorLists, (N, 2|3) arrays or tuple "
          "lists, of kind `local_kind` / `remote_kind`, dram by default); a file of this agent is the peer "
          "`agent.name` with remote_kind='file'.");
}

void bind_notifications(nb::class_<PyAgent>& c) {
  c.def(
       "notify",
       [](PyAgent& self, const std::string& peer, nb::handle message, std::uint64_t tag) {
         std::string text = message_of(message);
         auto agent = self.get();
         nb::gil_scoped_release release;
         check(agent->notify(peer, text, tag));
       },
       "peer"_a, "message"_a, "tag"_a = 0, "Sends `message` (str or bytes) with `tag` to the peer's inbox, without data.")
      .def(
          "take_notifications",
          [](PyAgent& self, std::optional<std::string> peer, std::optional<std::uint64_t> tag) {
            auto agent = self.get();
            if (!peer && !tag) return agent->take_notifications();
            return agent->take_notifications(NotificationFilter{std::move(peer), tag});
          },
          "peer"_a = nb::none(), "tag"_a = nb::none(),
          "Drains the inbox; with `peer` and/or `tag`, takes only the matching notifications (others stay).")
      .def(
          "wait_for_notifications",
          [](PyAgent& self, double timeout) {
            auto agent = self.get();
            Status s = interruptible_wait(seconds_arg(timeout, "timeout"), [&](std::chrono::nanoseconds slice) {
              return agent->wait_for_notifications(slice) ? Status::Ok() : Timeout("no notification");
            });
            return s.ok();
          },
          "timeout"_a, "Blocks (GIL released) until the inbox holds a notification or `timeout` s pass.")
      .def(
          "wait_for_notifications",
          [](PyAgent& self, const std::vector<std::tuple<std::string, std::uint64_t>>& keys, double timeout) {
            std::vector<NotificationKey> wanted;
            wanted.reserve(keys.size());
            for (const auto& [from, tag] : keys) wanted.push_back(NotificationKey{from, tag});
            auto agent = self.get();
            std::vector<Notification> taken;
            check(interruptible_wait(seconds_arg(timeout, "timeout"), [&](std::chrono::nanoseconds slice) {
              Result<std::vector<Notification>> r = agent->wait_for_notifications(wanted, slice);
              if (!r.ok()) return r.status();
              taken = std::move(r).value();
              return Status::Ok();
            }));
            return taken;
          },
          "keys"_a, "timeout"_a,
          "Blocks (GIL released) until, for every (peer, tag) key, a matching notification is in the inbox, then "
          "takes exactly those (the oldest match per key) and returns them in key order. Raises kvferry.Timeout "
          "naming the missing keys, taking nothing.")
      .def("dropped_notifications", [](PyAgent& self) { return self.get()->dropped_notifications(); });
}

}  // namespace

void bind_agent(nb::module_& m) {
  nb::class_<PyAgent> c(m, "Agent",
                        "One named endpoint per process or GPU worker (kvferry/agent.h). Thread-safe; blocking "
                        "calls release the GIL. close() (or a `with` block) stops it; requests may outlive it.");
  c.def(nb::new_(&make_agent), "name"_a, "backends"_a = nb::none(), "params"_a = nb::none(), "peer_timeout"_a = 5.0,
        "connect_timeout"_a = 3.0, "max_notification_bytes"_a = 64 * 1024, "max_inbox_notifications"_a = 1 << 16,
        "metadata_service"_a = "", "metadata_lease"_a = 5, "metrics_address"_a = "",
        "`backends`: names to start (all usable when None); `params`: {'tcp.streams': '4', ...}; timeouts in "
        "seconds. `metadata_service`: 'etcd://HOST:PORT/NAMESPACE' (peers join and leave through it; "
        "`metadata_lease` whole seconds >= 2); `metrics_address`: 'ADDRESS:PORT' of a Prometheus /metrics "
        "endpoint (port 0: any free port, see metrics_port()).")
      .def_prop_ro("name", &PyAgent::name)
      .def("__repr__", [](const PyAgent& self) { return "Agent('" + self.name() + "')"; })
      .def("backends", [](PyAgent& self) { return self.get()->backends(); })
      .def("close", &PyAgent::close, "Cancels transfers, stops threads, drops references to registered memory.")
      .def("__enter__", [](nb::handle self) { return nb::borrow(self); })
      .def("__exit__", [](PyAgent& self, nb::args) { self.close(); })
      .def("_kept_regions", &PyAgent::kept_regions);
  bind_registration(c);
  bind_metadata(c);
  // The strided create_transfer first: overloads are tried in order, and a failed try
  // costs a type lookup that matters on the cheapest form (O(lanes + blocks)), not on
  // the others.
  bind_lanes(m, c);
  bind_transfers(c);
  bind_notifications(c);
  bind_cluster(m, c);
}

}  // namespace kvferry::python
