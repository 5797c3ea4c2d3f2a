// Heterogeneous tensor parallelism (kvferry/kv/tp_mapping.h, kv_head_copy.h,
// tp_transfer.h): which heads move between prefill and decode ranks, the head gather and
// scatter, and the TpSender / TpReceiver endpoints.
//
// A TP endpoint holds its Agent (the C++ objects need it to outlive them) and is closed
// by Agent.close() before the Agent stops, so its transfers end before registered memory
// is released.
#include <nanobind/operators.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include "kvferry/kv/kv_head_copy.h"
#include "kvferry/kv/tp_mapping.h"
#include "kvferry/kv/tp_transfer.h"
#include "memory_args.h"
#include "py_agent.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace kvferry::python {
namespace {

HeadRange heads_of(nb::handle object) {
  if (nb::isinstance<HeadRange>(object)) return nb::cast<HeadRange>(object);
  auto [first, count] = nb::cast<std::tuple<std::uint32_t, std::uint32_t>>(object);
  return HeadRange{first, count};
}

TpPath path_of(nb::handle object) {
  if (nb::isinstance<TpPath>(object)) return nb::cast<TpPath>(object);
  std::string text = nb::cast<std::string>(object);
  TpPath p;
  if (!parse_tp_path(text, &p)) throw StatusError(InvalidArgument("unknown TP path '" + text + "' (auto, host, device, direct)"));
  return p;
}

// The staging of a head copy: an array or tensor, or an (address, length[, device]) tuple
// of `kind`.
KvStaging staging_of(nb::handle object, nb::handle kind) {
  std::optional<Region> r = region_of(object, kind_of(kind));
  if (!r) throw StatusError(InvalidArgument("staging: expected an array, a tensor or an (address, length[, device]) tuple"));
  return KvStaging{r->descriptor.address, r->descriptor.length, r->kind, r->descriptor.device};
}

// One TP endpoint (TpSender or TpReceiver) and the Agent it needs, destroyed in that order.
template <typename T>
class TpEndpoint : public AgentDependent {
 public:
  TpEndpoint(std::unique_ptr<T> endpoint, std::shared_ptr<Agent> agent)
      : endpoint_(endpoint.release(), [agent = std::move(agent)](T* p) { delete p; }) {}
  ~TpEndpoint() override { close(); }
  TpEndpoint(const TpEndpoint&) = delete;
  TpEndpoint& operator=(const TpEndpoint&) = delete;
  std::shared_ptr<T> get() const {
    std::shared_ptr<T> e = endpoint_;
    if (!e) throw StatusError(FailedPrecondition("the TP endpoint is closed"));
    return e;
  }
  // Cancels its transfers and deregisters its staging (GIL released).
  void close() override {
    std::shared_ptr<T> e = std::move(endpoint_);
    if (!e) return;
    nb::gil_scoped_release release;
    e.reset();
  }

 private:
  std::shared_ptr<T> endpoint_;
};
using PySender = TpEndpoint<TpSender>;
using PyReceiver = TpEndpoint<TpReceiver>;

template <typename T, typename Options>
std::shared_ptr<TpEndpoint<T>> make_endpoint(PyAgent& agent, const KvPool& pool, Options options) {
  std::shared_ptr<Agent> a = agent.get();
  Result<std::unique_ptr<T>> made = [&] {
    nb::gil_scoped_release release;
    return T::create(*a, pool, std::move(options));
  }();
  auto endpoint = std::make_shared<TpEndpoint<T>>(unwrap(std::move(made)), std::move(a));
  agent.add_dependent(endpoint);
  return endpoint;
}

template <typename E>
Status sliced_wait(const E& endpoint, const std::string& request, double timeout) {
  return interruptible_wait(seconds_arg(timeout, "timeout"), [&](std::chrono::nanoseconds slice) {
    return endpoint->wait(request, std::chrono::duration_cast<std::chrono::milliseconds>(slice));
  });
}

void bind_mapping(nb::module_& m) {
  nb::class_<HeadRange>(m, "HeadRange", "KV heads [first, first + count).")
      .def(nb::init<>())
      .def("__init__", [](HeadRange* self, std::uint32_t first, std::uint32_t count) { new (self) HeadRange{first, count}; },
           "first"_a, "count"_a)
      .def_rw("first", &HeadRange::first)
      .def_rw("count", &HeadRange::count)
      .def_prop_ro("end", &HeadRange::end)
      .def("empty", &HeadRange::empty)
      .def(nb::self == nb::self)
      .def("__repr__", [](const HeadRange& h) {
        return "HeadRange(" + std::to_string(h.first) + ", " + std::to_string(h.count) + ")";
      });
  m.def(
      "tp_rank_heads",
      [](std::uint32_t kv_heads, std::uint32_t tp, std::uint32_t rank) { return unwrap(tp_rank_heads(kv_heads, tp, rank)); },
      "kv_heads"_a, "tp"_a, "rank"_a, "The heads rank `rank` of a TP group of `tp` ranks holds.");

  nb::class_<TpShare>(m, "TpShare", "A contiguous piece of a decode rank's heads, read from one prefill rank.")
      .def_ro("prefill_rank", &TpShare::prefill_rank)
      .def_ro("decode_rank", &TpShare::decode_rank)
      .def_ro("heads", &TpShare::heads)
      .def_ro("source_head_offset", &TpShare::source_head_offset)
      .def_ro("destination_head_offset", &TpShare::destination_head_offset)
      .def(nb::self == nb::self)
      .def("__repr__", [](const TpShare& s) {
        return "TpShare(p" + std::to_string(s.prefill_rank) + " -> d" + std::to_string(s.decode_rank) + ", heads [" +
               std::to_string(s.heads.first) + ", " + std::to_string(s.heads.end()) + "), source offset " +
               std::to_string(s.source_head_offset) + ", destination offset " +
               std::to_string(s.destination_head_offset) + ")";
      });

  auto shares = [](std::span<const TpShare> s) { return std::vector<TpShare>(s.begin(), s.end()); };
  nb::class_<TpMapping>(m, "TpMapping", "Which KV heads move between prefill TP P and decode TP D ranks. Immutable.")
      .def_static(
          "create",
          [](std::uint32_t kv_heads, std::uint32_t prefill_tp, std::uint32_t decode_tp, bool mla) {
            return unwrap(TpMapping::create(kv_heads, prefill_tp, decode_tp, mla));
          },
          "kv_heads"_a, "prefill_tp"_a, "decode_tp"_a, "mla"_a = false)
      .def_prop_ro("kv_heads", &TpMapping::kv_heads)
      .def_prop_ro("prefill_tp", &TpMapping::prefill_tp)
      .def_prop_ro("decode_tp", &TpMapping::decode_tp)
      .def_prop_ro("mla", &TpMapping::mla)
      .def("prefill_heads", &TpMapping::prefill_heads, "prefill_rank"_a)
      .def("decode_heads", &TpMapping::decode_heads, "decode_rank"_a)
      .def("decode_shares", [shares](const TpMapping& t, std::uint32_t d) { return shares(t.decode_shares(d)); },
           "decode_rank"_a, "What decode rank `d` reads, by destination offset (empty when out of range).")
      .def("prefill_shares", [shares](const TpMapping& t, std::uint32_t p) { return shares(t.prefill_shares(p)); },
           "prefill_rank"_a, "What prefill rank `p` sends, by decode rank then head.")
      .def("shares", [shares](const TpMapping& t) { return shares(t.shares()); })
      .def("sources_of", &TpMapping::sources_of, "decode_rank"_a)
      .def("describe", &TpMapping::describe)
      .def("__repr__", [](const TpMapping& t) { return "TpMapping(" + t.describe() + ")"; });
}


// The Python arguments gather_kv_heads and scatter_kv_heads share, converted once (with the
// GIL held); `ids` keeps the block-id array alive for the window that points into it.
struct HeadCopyCall {
  HeadCopyCall(nb::handle block_ids, std::uint64_t first_token, std::uint64_t tokens, nb::handle heads_arg,
               nb::handle staging_arg, nb::handle staging_kind, double timeout, std::uint32_t threads)
      : ids(block_ids),
        window{ids.span(), first_token, tokens},
        staging(staging_of(staging_arg, staging_kind)),
        heads(heads_of(heads_arg)) {
    options.timeout = millis_arg(timeout, "timeout");
    options.threads = threads;
  }
  IndexArray ids;
  KvTokenWindow window;
  KvStaging staging;
  HeadRange heads;
  KvHeadCopyOptions options;
};

void bind_head_copy(nb::module_& m) {
  nb::class_<KvStagingShape>(m, "KvStagingShape", "A staging region [heads, layers, kv, tokens, head_dim].")
      .def_static("of", &KvStagingShape::of, "layout"_a, "heads"_a, "tokens"_a)
      .def_ro("heads", &KvStagingShape::heads)
      .def_ro("layers", &KvStagingShape::layers)
      .def_ro("kv", &KvStagingShape::kv)
      .def_ro("tokens", &KvStagingShape::tokens)
      .def_ro("head_dim", &KvStagingShape::head_dim)
      .def_ro("dtype", &KvStagingShape::dtype)
      .def("row_bytes", &KvStagingShape::row_bytes)
      .def("head_bytes", &KvStagingShape::head_bytes)
      .def("bytes", &KvStagingShape::bytes)
      .def("head_offset", &KvStagingShape::head_offset, "head"_a)
      .def("row_offset", &KvStagingShape::row_offset, "head"_a, "layer"_a, "kv_part"_a, "token"_a);

  m.def(
      "gather_kv_heads",
      [](const KvPool& pool, nb::handle block_ids, std::uint64_t first_token, std::uint64_t tokens, nb::handle heads,
         nb::handle staging, nb::handle staging_kind, double timeout, std::uint32_t threads) {
        HeadCopyCall c(block_ids, first_token, tokens, heads, staging, staging_kind, timeout, threads);
        nb::gil_scoped_release release;
        check(gather_kv_heads(pool, c.window, c.heads, c.staging, c.options));
      },
      "pool"_a, "block_ids"_a, "first_token"_a, "tokens"_a, "heads"_a, "staging"_a, nb::kw_only(),
      "staging_kind"_a = nb::none(), "timeout"_a = 10.0, "threads"_a = 0,
      "Pool heads `heads` (HeadRange or (first, count), the pool's numbering) of tokens [first_token, "
      "+tokens) of the request whose block table is `block_ids` -> `staging` (an array, tensor or (address, "
      "length[, device]) tuple) laid out as KvStagingShape.of(pool.layout, heads.count, tokens). GIL released.");
  m.def(
      "scatter_kv_heads",
      [](nb::handle staging, const KvPool& pool, nb::handle block_ids, std::uint64_t first_token, std::uint64_t tokens,
         nb::handle heads, nb::handle staging_kind, double timeout, std::uint32_t threads) {
        HeadCopyCall c(block_ids, first_token, tokens, heads, staging, staging_kind, timeout, threads);
        nb::gil_scoped_release release;
        check(scatter_kv_heads(c.staging, pool, c.window, c.heads, c.options));
      },
      "staging"_a, "pool"_a, "block_ids"_a, "first_token"_a, "tokens"_a, "heads"_a, nb::kw_only(),
      "staging_kind"_a = nb::none(), "timeout"_a = 10.0, "threads"_a = 0,
      "The reverse of gather_kv_heads: staging -> pool heads `heads` of those tokens. GIL released.");
}

void bind_options(nb::module_& m) {
  nb::enum_<TpPath>(m, "TpPath", "How a TP request moves: staged on the host or the GPUs, or directly.")
      .value("AUTO", TpPath::kAuto)
      .value("HOST", TpPath::kHostStaging)
      .value("DEVICE", TpPath::kDeviceStaging)
      .value("DIRECT", TpPath::kDirect)
      .def("__str__", [](TpPath p) { return std::string(to_string(p)); });

  nb::class_<TpGroups>(m, "TpGroups", "The model's KV heads and the two TP degrees; both sides must agree.")
      .def(
          "__init__",
          [](TpGroups* self, std::uint32_t kv_heads, std::uint32_t prefill_tp, std::uint32_t decode_tp, bool mla) {
            new (self) TpGroups{kv_heads, prefill_tp, decode_tp, mla};
          },
          "kv_heads"_a, "prefill_tp"_a, "decode_tp"_a, "mla"_a = false)
      .def_rw("kv_heads", &TpGroups::kv_heads)
      .def_rw("prefill_tp", &TpGroups::prefill_tp)
      .def_rw("decode_tp", &TpGroups::decode_tp)
      .def_rw("mla", &TpGroups::mla);

  nb::class_<TpStagingOptions>(m, "TpStagingOptions", "Staging arenas of a TP endpoint (slots of slot_bytes).")
      .def(
          "__init__",
          [](TpStagingOptions* self, std::uint64_t slot_bytes, std::uint32_t host_slots, std::uint32_t device_slots,
             bool host_via_device) {
            new (self) TpStagingOptions{slot_bytes, host_slots, device_slots, host_via_device};
          },
          "slot_bytes"_a = 16ull << 20, "host_slots"_a = 8, "device_slots"_a = 8, "host_via_device"_a = true)
      .def_rw("slot_bytes", &TpStagingOptions::slot_bytes)
      .def_rw("host_slots", &TpStagingOptions::host_slots)
      .def_rw("device_slots", &TpStagingOptions::device_slots)
      .def_rw("host_via_device", &TpStagingOptions::host_via_device);

  nb::class_<TpReceiveReport>(m, "TpReceiveReport", "What a finished (or failed) receiver request did.")
      .def_ro("path", &TpReceiveReport::path)
      .def_ro("sources", &TpReceiveReport::sources)
      .def_ro("bytes", &TpReceiveReport::bytes)
      .def_ro("pieces", &TpReceiveReport::pieces)
      .def_ro("elapsed_ns", &TpReceiveReport::elapsed_ns)
      .def_ro("scatter_ns", &TpReceiveReport::scatter_ns);

  nb::class_<TpPathEstimate>(m, "TpPathEstimate")
      .def_ro("path", &TpPathEstimate::path)
      .def_ro("direct_descriptors", &TpPathEstimate::direct_descriptors)
      .def_ro("direct_seconds", &TpPathEstimate::direct_seconds)
      .def_ro("staging_seconds", &TpPathEstimate::staging_seconds);
  m.def(
      "tp_path_estimate",
      [](const KvLayout& source, const KvLayout& destination, nb::handle kind, std::uint64_t tokens,
         std::uint32_t heads, std::uint32_t shares) {
        return tp_path_estimate(source, destination, kind_of(kind).value_or(MemoryKind::kDram), tokens, heads, shares);
      },
      "source"_a, "destination"_a, "kind"_a, "tokens"_a, "heads"_a, "shares"_a,
      "The cost estimate TpPath.AUTO picks by.");
  m.def("tp_direct_descriptors", &tp_direct_descriptors, "source"_a, "destination"_a, "tokens"_a, "heads"_a);
  m.attr("KV_TP_METADATA_KEY") = std::string(kKvTpMetadataKey);
}

void bind_endpoints(nb::module_& m) {
  nb::class_<PySender>(m, "TpSender",
                       "A prefill rank's end of heterogeneous-TP transfers (kvferry/kv/tp_transfer.h). Progress is "
                       "driven by progress() or wait(); blocking calls release the GIL. Agent.close() closes it.")
      .def(
          nb::new_([](PyAgent& agent, const KvPool& pool, const TpGroups& groups, std::uint32_t rank,
             std::optional<TpStagingOptions> staging, std::optional<std::uint64_t> piece_bytes,
             std::optional<std::uint64_t> device_piece_bytes, std::string backend) {
            TpSenderOptions o;
            o.groups = groups;
            o.rank = rank;
            if (staging) o.staging = *staging;
            if (piece_bytes) o.piece_bytes = *piece_bytes;
            if (device_piece_bytes) o.device_piece_bytes = *device_piece_bytes;
            o.backend = std::move(backend);
            return make_endpoint<TpSender>(agent, pool, std::move(o));
          }),
          "agent"_a, "pool"_a, "groups"_a, "rank"_a, nb::kw_only(), "staging"_a = nb::none(),
          "piece_bytes"_a = nb::none(), "device_piece_bytes"_a = nb::none(), "backend"_a = "")
      .def(
          "send",
          [](PySender& self, const std::string& request, nb::handle block_table, std::uint64_t first_token,
             std::uint64_t tokens, bool last) {
            IndexArray table(block_table);
            auto e = self.get();
            nb::gil_scoped_release release;
            check(e->send(request, table.span(), first_token, tokens, last));
          },
          "request"_a, "block_table"_a, "first_token"_a, "tokens"_a, "last"_a,
          "Tokens [first_token, +tokens) of `request` are computed: send them to every decode rank that reads us.")
      .def(
          "progress",
          [](PySender& self) {
            auto e = self.get();
            nb::gil_scoped_release release;
            check(e->progress());
          },
          "Takes decode ranks' asks, gathers and posts what can go now, reaps finished writes.")
      .def(
          "wait", [](PySender& self, const std::string& request, double timeout) { check(sliced_wait(self.get(), request, timeout)); },
          "request"_a, "timeout"_a,
          "Blocks (GIL released) until every chunk of `request` landed at every decode rank reading us; raises "
          "kvferry.Timeout naming the ranks still missing.")
      .def("take_other_notifications", [](PySender& self) { return self.get()->take_other_notifications(); })
      .def("close", &PySender::close, "Cancels its transfers and deregisters its staging.")
      .def("__enter__", [](nb::handle self) { return nb::borrow(self); })
      .def("__exit__", [](PySender& self, nb::args) { self.close(); });

  nb::class_<PyReceiver>(m, "TpReceiver",
                         "A decode rank's end of heterogeneous-TP transfers (kvferry/kv/tp_transfer.h). Blocking "
                         "calls release the GIL. Agent.close() closes it.")
      .def(
          nb::new_([](PyAgent& agent, const KvPool& pool, const TpGroups& groups, std::uint32_t rank,
             nb::handle path, std::optional<TpStagingOptions> staging, double slot_timeout, double peer_timeout) {
            TpReceiverOptions o;
            o.groups = groups;
            o.rank = rank;
            o.path = path_of(path);
            if (staging) o.staging = *staging;
            o.slot_timeout = millis_arg(slot_timeout, "slot_timeout");
            o.peer_timeout = millis_arg(peer_timeout, "peer_timeout");
            return make_endpoint<TpReceiver>(agent, pool, std::move(o));
          }),
          "agent"_a, "pool"_a, "groups"_a, "rank"_a, nb::kw_only(), "path"_a = "auto", "staging"_a = nb::none(),
          "slot_timeout"_a = 5.0, "peer_timeout"_a = 5.0)
      .def(
          "connect",
          [](PyReceiver& self, const std::vector<std::string>& peers) {
            auto e = self.get();
            nb::gil_scoped_release release;
            check(e->connect(peers));
          },
          "prefill_peers"_a, "The prefill agents (metadata loaded); once, before the first expect().")
      .def(
          "expect",
          [](PyReceiver& self, const std::string& request, nb::handle block_table, std::uint64_t tokens, nb::handle path) {
            IndexArray table(block_table);
            TpPath p = path.is_none() ? TpPath::kAuto : path_of(path);
            auto e = self.get();
            nb::gil_scoped_release release;
            check(e->expect(request, table.span(), tokens, p));
          },
          "request"_a, "block_table"_a, "tokens"_a, "path"_a = nb::none(),
          "Asks every prefill rank we read for `request`'s `tokens` tokens, to land in our blocks `block_table`.")
      .def(
          "progress",
          [](PyReceiver& self) {
            auto e = self.get();
            nb::gil_scoped_release release;
            check(e->progress());
          })
      .def(
          "wait",
          [](PyReceiver& self, const std::string& request, double timeout) { check(sliced_wait(self.get(), request, timeout)); },
          "request"_a, "timeout"_a,
          "Blocks (GIL released) until `request` is complete; raises its error, or kvferry.Timeout naming the "
          "missing senders.")
      .def("last_report", [](PyReceiver& self) { return self.get()->last_report(); })
      .def("describe_sources", [](PyReceiver& self) { return self.get()->describe_sources(); })
      .def("take_other_notifications", [](PyReceiver& self) { return self.get()->take_other_notifications(); })
      .def("close", &PyReceiver::close, "Cancels its transfers and deregisters its staging.")
      .def("__enter__", [](nb::handle self) { return nb::borrow(self); })
      .def("__exit__", [](PyReceiver& self, nb::args) { self.close(); });
}

}  // namespace

void bind_tp(nb::module_& m) {
  bind_mapping(m);
  bind_head_copy(m);
  bind_options(m);
  bind_endpoints(m);
}

}  // namespace kvferry::python
