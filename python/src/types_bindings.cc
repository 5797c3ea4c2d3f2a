// Value types of the Agent API: enums, descriptor lists, prepared lists, requests,
// notifications, shared memory, files, build information.
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>

#include "kvferry/completion_queue.h"
#include "kvferry/file.h"
#include "kvferry/info.h"
#include "kvferry/prepared_list.h"
#include "kvferry/shared_memory.h"
#include "memory_args.h"
#include "py_agent.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace kvferry::python {

std::chrono::nanoseconds seconds_arg(double seconds, const char* what) {
  if (!(seconds >= 0)) throw StatusError(InvalidArgument(std::string(what) + " must be >= 0 seconds"));
  if (seconds > 1e9) seconds = 1e9;
  return std::chrono::nanoseconds(static_cast<std::int64_t>(seconds * 1e9));
}

namespace {
// TransferOp.READ and TransferOp.WRITE (held for the module's life): op_of compares by
// identity first, which costs nothing, where the enum caster looks the member up in a table.
PyObject* g_read_member = nullptr;
PyObject* g_write_member = nullptr;
}  // namespace

TransferOp op_of(nb::handle object) {
  if (object.ptr() == g_read_member) return TransferOp::kRead;
  if (object.ptr() == g_write_member) return TransferOp::kWrite;
  if (nb::isinstance<TransferOp>(object)) return nb::cast<TransferOp>(object);
  if (nb::isinstance<nb::str>(object)) {
    std::string text = nb::cast<std::string>(object);
    if (text == "read") return TransferOp::kRead;
    if (text == "write") return TransferOp::kWrite;
    throw StatusError(InvalidArgument("unknown transfer op '" + text + "' (read or write)"));
  }
  throw StatusError(InvalidArgument("a transfer op is a TransferOp or 'read' / 'write'"));
}

namespace {

nb::bytes to_bytes(const std::string& s) { return nb::bytes(s.data(), s.size()); }

nb::ndarray<nb::numpy, std::uint64_t> descriptors_to_numpy(const DescriptorList& list) {
  auto* data = new std::uint64_t[list.size() * 3];
  for (std::size_t i = 0; i < list.size(); ++i) {
    data[3 * i] = list[i].address;
    data[3 * i + 1] = list[i].length;
    data[3 * i + 2] = list[i].device;
  }
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<std::uint64_t*>(p); });
  return nb::ndarray<nb::numpy, std::uint64_t>(data, {list.size(), 3}, owner);
}

void bind_enums(nb::module_& m) {
  nb::enum_<MemoryKind>(m, "MemoryKind", "Where bytes live: host memory, CUDA device memory, or a file.")
      .value("DRAM", MemoryKind::kDram)
      .value("VRAM", MemoryKind::kVram)
      .value("FILE", MemoryKind::kFile)
      .def("__str__", [](MemoryKind k) { return std::string(to_string(k)); });
  auto ops = nb::enum_<TransferOp>(m, "TransferOp",
                                   "Direction seen from the initiator: READ remote -> local, WRITE local -> remote.")
                 .value("READ", TransferOp::kRead)
                 .value("WRITE", TransferOp::kWrite)
                 .def("__str__", [](TransferOp k) { return std::string(to_string(k)); });
  g_read_member = nb::object(ops.attr("READ")).release().ptr();
  g_write_member = nb::object(ops.attr("WRITE")).release().ptr();
  nb::enum_<TransferState>(m, "TransferState")
      .value("READY", TransferState::kReady)
      .value("IN_PROGRESS", TransferState::kInProgress)
      .value("DONE", TransferState::kDone)
      .value("ERROR", TransferState::kError)
      .def("__str__", [](TransferState k) { return std::string(to_string(k)); });
}

void bind_descriptors(nb::module_& m) {
  nb::class_<DescriptorList>(m, "DescriptorList",
                             "Descriptors (address, length, device) of one memory kind. A plain value.")
      .def(
          "__init__",
          [](DescriptorList* self, nb::handle kind, nb::handle descriptors) {
            MemoryKind k = kind_of(kind).value_or(MemoryKind::kDram);
            if (descriptors.is_none()) {
              new (self) DescriptorList(k);
            } else {
              new (self) DescriptorList(descriptors_of(descriptors, k));
            }
          },
          "kind"_a = "dram", "descriptors"_a = nb::none(),
          "`descriptors`: an (N, 2) or (N, 3) integer array of address, length[, device], or a list of tuples.")
      .def_prop_ro("kind", &DescriptorList::kind)
      .def("add", nb::overload_cast<std::uint64_t, std::uint64_t, std::uint32_t>(&DescriptorList::add), "address"_a,
           "length"_a, "device"_a = 0)
      .def("total_bytes", &DescriptorList::total_bytes)
      .def("__len__", &DescriptorList::size)
      .def("__getitem__",
           [](const DescriptorList& l, std::int64_t i) {
             if (i < 0) i += static_cast<std::int64_t>(l.size());
             if (i < 0 || static_cast<std::size_t>(i) >= l.size()) throw nb::index_error();
             const Descriptor& d = l[static_cast<std::size_t>(i)];
             return nb::make_tuple(d.address, d.length, d.device);
           })
      .def("to_numpy", &descriptors_to_numpy, "An (N, 3) uint64 array of address, length, device (a copy).")
      .def("__repr__", [](const DescriptorList& l) {
        return "DescriptorList(" + std::string(to_string(l.kind())) + ", " + std::to_string(l.size()) + " descriptors, " +
               std::to_string(l.total_bytes()) + " bytes)";
      });

  nb::class_<PreparedList>(m, "PreparedList",
                           "A descriptor list validated once (Agent.prepare_local / prepare_remote), for index "
                           "transfers. Immutable; safe to share between threads.")
      .def_prop_ro("valid", &PreparedList::valid)
      .def_prop_ro("kind", &PreparedList::kind)
      .def_prop_ro("is_local", &PreparedList::is_local)
      .def_prop_ro("peer", &PreparedList::peer)
      .def("__len__", &PreparedList::size);
}

void bind_requests(nb::module_& m) {
  nb::class_<TransferTelemetry>(m, "TransferTelemetry")
      .def_ro("backend", &TransferTelemetry::backend)
      .def_ro("bytes", &TransferTelemetry::bytes)
      .def_ro("descriptors_requested", &TransferTelemetry::descriptors_requested)
      .def_ro("descriptors_merged", &TransferTelemetry::descriptors_merged)
      .def_ro("prepare_ns", &TransferTelemetry::prepare_ns)
      .def_ro("post_ns", &TransferTelemetry::post_ns)
      .def_ro("transfer_ns", &TransferTelemetry::transfer_ns)
      .def_ro("posts", &TransferTelemetry::posts);

  nb::class_<Notification>(m, "Notification",
                           "A message from a peer: `from_` (its name), `message` (bytes), `tag` (the sender's).")
      .def_prop_ro("from_", [](const Notification& n) { return n.from; })
      .def_prop_ro("message", [](const Notification& n) { return to_bytes(n.message); })
      .def_ro("tag", &Notification::tag)
      .def("__repr__", [](const Notification& n) {
        return "Notification(from_='" + n.from + "', tag=" + std::to_string(n.tag) + ", " +
               std::to_string(n.message.size()) + " bytes)";
      });

  nb::class_<TransferRequest>(m, "TransferRequest",
                              "A transfer made by Agent.create_transfer: post() starts it, wait() waits for it. "
                              "Thread-safe; may outlive its Agent (it then reports errors).")
      .def(
          "post",
          [](TransferRequest& r, CompletionQueue* queue) { check(queue ? r.post(*queue) : r.post()); },
          "queue"_a = nb::none(), nb::call_guard<nb::gil_scoped_release>(),
          "Starts the transfer; never waits for the data. With `queue`, the end of this post (tag, status, "
          "telemetry) is pushed there: exactly one completion, a raised error included.")
      .def_prop_ro("state", &TransferRequest::state)
      .def(
          "error", [](const TransferRequest& r) { return exception_for(r.error()); },
          "The kvferry.Error of a failed request (not raised), or None.")
      .def(
          "wait",
          [](TransferRequest& r, double timeout) {
            check(interruptible_wait(seconds_arg(timeout, "timeout"),
                                     [&](std::chrono::nanoseconds slice) { return r.wait(slice); }));
          },
          "timeout"_a = 30.0,
          "Blocks (GIL released) up to `timeout` seconds: returns when done, raises kvferry.Timeout while still "
          "in progress, else the transfer's error.")
      .def("done", [](const TransferRequest& r) { return r.state() == TransferState::kDone; })
      .def("cancel", &TransferRequest::cancel, nb::call_guard<nb::gil_scoped_release>())
      .def("telemetry", &TransferRequest::telemetry)
      .def_prop_ro("peer", &TransferRequest::peer)
      .def_prop_ro("op", &TransferRequest::op)
      .def_prop_ro("tag", &TransferRequest::tag);
}

void bind_memory_owners(nb::module_& m) {
  nb::class_<SharedMemory>(m, "SharedMemory",
                           "Host memory that same-host peers can map (Agent.allocate_shared_memory). Deregister "
                           "it before dropping it.")
      .def_prop_ro("address", [](const SharedMemory& s) { return reinterpret_cast<std::uint64_t>(s.data()); })
      .def_prop_ro("size", &SharedMemory::size)
      .def_prop_ro("huge_pages", &SharedMemory::huge_pages)
      .def("descriptors", &SharedMemory::descriptors)
      .def(
          "array",
          [](nb::handle self) {
            const auto& s = nb::cast<const SharedMemory&>(self);
            return nb::ndarray<nb::numpy, std::uint8_t, nb::ndim<1>>(static_cast<std::uint8_t*>(s.data()), {s.size()},
                                                                     self);
          },
          "A uint8 numpy view of the whole allocation (it keeps the allocation alive).");

  nb::class_<FileRegistration>(m, "FileRegistration")
      .def_ro("id", &FileRegistration::id)
      .def_ro("length", &FileRegistration::length)
      .def_ro("direct", &FileRegistration::direct)
      .def_ro("direct_alignment", &FileRegistration::direct_alignment)
      .def_ro("path", &FileRegistration::path)
      .def("region", &FileRegistration::region, "The whole file as one descriptor, (0, length, id).")
      .def(
          "at", [](const FileRegistration& f, std::uint64_t offset, std::uint64_t bytes) {
            Descriptor d = f.at(offset, bytes);
            return nb::make_tuple(d.address, d.length, d.device);
          },
          "offset"_a, "bytes"_a, "One descriptor of this file: (offset, bytes, id).");

  nb::class_<FileInfo>(m, "FileInfo")
      .def_ro("exists", &FileInfo::exists)
      .def_ro("regular", &FileInfo::regular)
      .def_ro("size", &FileInfo::size);
  m.def(
      "query_file", [](const std::string& path) { return unwrap(query_file(path)); }, "path"_a,
      nb::call_guard<nb::gil_scoped_release>(), "Whether `path` exists and how large it is.");
}

void bind_info(nb::module_& m) {
  nb::class_<BackendInfo>(m, "BackendInfo")
      .def_ro("name", &BackendInfo::name)
      .def_ro("description", &BackendInfo::description)
      .def_ro("usable", &BackendInfo::usable)
      .def_ro("reason", &BackendInfo::reason)
      .def("__repr__", [](const BackendInfo& b) {
        return "BackendInfo(" + b.name + ", usable=" + (b.usable ? "True" : "False") + ")";
      });
  m.def("compiled_backends", &compiled_backends, nb::call_guard<nb::gil_scoped_release>(),
        "The backends compiled into this build and whether each is usable here (and why not).");
  m.def("version_string", [] { return std::string(version_string()); });
}

}  // namespace

void bind_types(nb::module_& m) {
  bind_enums(m);
  bind_descriptors(m);
  bind_requests(m);
  bind_memory_owners(m);
  bind_info(m);
}

}  // namespace kvferry::python
