// The KV layer (kvferry/kv/*): geometry, layouts, pools over an engine's tensors, block
// plans from numpy block ids, the pool handshake and links between pools.
#include <nanobind/ndarray.h>
#include <nanobind/operators.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include "kvferry/kv/block_plan.h"
#include "kvferry/kv/kv_handshake.h"
#include "kvferry/kv/kv_layout.h"
#include "kvferry/kv/kv_link.h"
#include "kvferry/kv/kv_pool.h"
#include "kvferry/kv/token_blocks.h"
#include "memory_args.h"
#include "py_agent.h"
#include "request_args.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace kvferry::python {
namespace {

using U32Array = nb::ndarray<nb::numpy, std::uint32_t, nb::ndim<1>>;

U32Array copy_to_numpy(std::span<const std::uint32_t> values) {
  auto* data = new std::uint32_t[values.size() ? values.size() : 1];
  std::copy(values.begin(), values.end(), data);
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<std::uint32_t*>(p); });
  return U32Array(data, {values.size()}, owner);
}

KvDtype dtype_of(nb::handle object) {
  if (nb::isinstance<KvDtype>(object)) return nb::cast<KvDtype>(object);
  std::string text = nb::cast<std::string>(nb::str(object));
  KvDtype d;
  if (!parse_kv_dtype(text, &d)) throw StatusError(InvalidArgument("unknown KV dtype '" + text + "'"));
  return d;
}

KvArrangement arrangement_of(nb::handle object) {
  if (nb::isinstance<KvArrangement>(object)) return nb::cast<KvArrangement>(object);
  std::string text = nb::cast<std::string>(object);
  KvArrangement a;
  if (!parse_kv_arrangement(text, &a))
    throw StatusError(InvalidArgument("unknown KV arrangement '" + text +
                                      "' (vllm-nhd, vllm-hnd, flashinfer, sglang, mla)"));
  return a;
}

LayerRange layers_of(std::optional<std::tuple<std::uint32_t, std::uint32_t>> layers) {
  LayerRange r;
  if (layers) {
    r.first = std::get<0>(*layers);
    r.count = std::get<1>(*layers);
  }
  return r;
}

// Plans into `out` (or a new plan) with the GIL released; block ids from numpy.
BlockPlan plan_blocks(const BlockPlanner& planner, nb::handle op, nb::handle source, nb::handle destination,
                      std::optional<std::tuple<std::uint32_t, std::uint32_t>> layers, BlockPlan* out) {
  TransferOp o = op_of(op);
  IndexArray src(source), dst(destination);
  BlockSelection selection{src.span(), dst.span(), layers_of(layers)};
  BlockPlan plan;
  BlockPlan& target = out ? *out : plan;
  {
    nb::gil_scoped_release release;
    check(planner.plan(o, selection, target));
  }
  return out ? BlockPlan() : std::move(plan);
}

void bind_layout(nb::module_& m) {
  nb::enum_<KvDtype>(m, "KvDtype")
      .value("BF16", KvDtype::kBf16)
      .value("FP16", KvDtype::kFp16)
      .value("FP8", KvDtype::kFp8)
      .value("FP32", KvDtype::kFp32)
      .def("__str__", [](KvDtype d) { return std::string(to_string(d)); });
  nb::enum_<KvArrangement>(m, "KvArrangement")
      .value("VLLM_NHD", KvArrangement::kVllmNhd)
      .value("VLLM_HND", KvArrangement::kVllmHnd)
      .value("FLASHINFER", KvArrangement::kFlashInfer)
      .value("SGLANG_TOKEN_SLOTS", KvArrangement::kSglangTokenSlots)
      .value("MLA", KvArrangement::kMla)
      .def("__str__", [](KvArrangement a) { return std::string(to_string(a)); });
  m.def("dtype_bytes", [](nb::handle d) { return dtype_bytes(dtype_of(d)); }, "dtype"_a);

  nb::class_<KvGeometry>(m, "KvGeometry", "What the model fixes: layers, KV heads, head dim, tokens per block, dtype.")
      .def(
          "__init__",
          [](KvGeometry* self, std::uint32_t layers, std::uint32_t kv_heads, std::uint32_t head_dim,
             std::uint32_t block_tokens, nb::handle dtype) {
            new (self) KvGeometry{layers, kv_heads, head_dim, block_tokens, dtype_of(dtype)};
          },
          "layers"_a, "kv_heads"_a, "head_dim"_a, "block_tokens"_a, "dtype"_a = "bf16")
      .def_rw("layers", &KvGeometry::layers)
      .def_rw("kv_heads", &KvGeometry::kv_heads)
      .def_rw("head_dim", &KvGeometry::head_dim)
      .def_rw("block_tokens", &KvGeometry::block_tokens)
      .def_rw("dtype", &KvGeometry::dtype)
      .def(nb::self == nb::self)
      .def("__repr__", [](const KvGeometry& g) {
        return "KvGeometry(layers=" + std::to_string(g.layers) + ", kv_heads=" + std::to_string(g.kv_heads) +
               ", head_dim=" + std::to_string(g.head_dim) + ", block_tokens=" + std::to_string(g.block_tokens) +
               ", dtype='" + std::string(to_string(g.dtype)) + "')";
      });

  nb::class_<KvLayout>(m, "KvLayout", "A geometry arranged in memory (kvferry/kv/kv_layout.h). Immutable.")
      .def_static(
          "create",
          [](const KvGeometry& g, nb::handle arrangement, std::uint32_t blocks) {
            return unwrap(KvLayout::create(g, arrangement_of(arrangement), blocks));
          },
          "geometry"_a, "arrangement"_a, "blocks"_a)
      .def_prop_ro("geometry", &KvLayout::geometry)
      .def_prop_ro("arrangement", &KvLayout::arrangement)
      .def_prop_ro("blocks", &KvLayout::blocks)
      .def("block_bytes", &KvLayout::block_bytes)
      .def("block_bytes_all_layers", &KvLayout::block_bytes_all_layers)
      .def("blocks_for_tokens", &KvLayout::blocks_for_tokens, "tokens"_a)
      .def("tensor_count", &KvLayout::tensor_count)
      .def("tensor_bytes", &KvLayout::tensor_bytes)
      .def("pool_bytes", &KvLayout::pool_bytes)
      .def("lanes_per_layer", &KvLayout::lanes_per_layer)
      .def("lane_count", &KvLayout::lane_count)
      .def("layer_of_lane", &KvLayout::layer_of_lane, "lane"_a)
      .def("tensor_of_lane", &KvLayout::tensor_of_lane, "lane"_a)
      .def("lane_offset", &KvLayout::lane_offset, "lane"_a)
      .def("block_stride", &KvLayout::block_stride)
      .def("segment_bytes", &KvLayout::segment_bytes)
      .def("segment_offset", &KvLayout::segment_offset, "lane"_a, "block"_a)
      .def("descriptor_index", &KvLayout::descriptor_index, "lane"_a, "block"_a)
      .def("descriptor_count", &KvLayout::descriptor_count)
      .def("describe", &KvLayout::describe)
      .def("__repr__", [](const KvLayout& l) { return "KvLayout(" + l.describe() + ")"; });
}

void bind_pool(nb::module_& m) {
  nb::class_<KvPool>(m, "KvPool",
                     "A layout plus where its tensors live. Describes memory; never owns or registers it.")
      .def_static(
          "create",
          [](const KvLayout& layout, nb::handle kind, std::vector<std::uint64_t> addresses, std::uint32_t device) {
            return unwrap(KvPool::create(layout, kind_of(kind).value_or(MemoryKind::kDram), std::move(addresses), device));
          },
          "layout"_a, "kind"_a, "tensor_addresses"_a, "device"_a = 0)
      .def_static(
          "create_contiguous",
          [](const KvLayout& layout, nb::handle kind, std::uint64_t base, std::uint32_t device) {
            return unwrap(KvPool::create_contiguous(layout, kind_of(kind).value_or(MemoryKind::kDram), base, device));
          },
          "layout"_a, "kind"_a, "base"_a, "device"_a = 0)
      .def_static(
          "from_tensors",
          [](const KvLayout& layout, nb::handle tensors) {
            if (!nb::isinstance<nb::list>(tensors) && !nb::isinstance<nb::tuple>(tensors))
              throw StatusError(InvalidArgument("KvPool.from_tensors: expected a list of tensors, one per layer"));
            std::vector<std::uint64_t> addresses;
            std::optional<Region> first;
            std::size_t i = 0;
            for (nb::handle t : tensors) {
              std::optional<Region> r = region_of(t, std::nullopt);
              if (!r) throw StatusError(InvalidArgument("KvPool.from_tensors: item " + std::to_string(i) + " is not an array or tensor"));
              if (r->descriptor.length != layout.tensor_bytes())
                throw StatusError(InvalidArgument("KvPool.from_tensors: tensor " + std::to_string(i) + " holds " +
                                                  std::to_string(r->descriptor.length) + " bytes; the layout (" +
                                                  layout.describe() + ") needs " +
                                                  std::to_string(layout.tensor_bytes())));
              if (first && (r->kind != first->kind || r->descriptor.device != first->descriptor.device))
                throw StatusError(InvalidArgument("KvPool.from_tensors: tensor " + std::to_string(i) +
                                                  " is on another device than tensor 0"));
              if (!first) first = r;
              addresses.push_back(r->descriptor.address);
              ++i;
            }
            if (!first) throw StatusError(InvalidArgument("KvPool.from_tensors: no tensors"));
            return unwrap(KvPool::create(layout, first->kind, std::move(addresses), first->descriptor.device));
          },
          "layout"_a, "tensors"_a,
          "A pool over an engine's existing tensors (one per layer; SGLang: k0, v0, k1, v1, ...), each exactly "
          "layout.tensor_bytes() long and contiguous. Register the same tensors with the Agent.")
      .def_prop_ro("layout", &KvPool::layout)
      .def_prop_ro("kind", &KvPool::kind)
      .def_prop_ro("device", &KvPool::device)
      .def_prop_ro("tensor_addresses", &KvPool::tensor_addresses)
      .def("segment_address", &KvPool::segment_address, "lane"_a, "block"_a)
      .def("tensor_regions", &KvPool::tensor_regions)
      .def("block_lanes", &KvPool::block_lanes, "The pool's segments as lanes x blocks, for prepare_*_lanes.")
      .def("block_descriptors", &KvPool::block_descriptors)
      .def("encode", [](const KvPool& p) {
        std::vector<std::uint8_t> b = p.encode();
        return nb::bytes(b.data(), b.size());
      })
      .def_static(
          "decode",
          [](nb::bytes b) {
            return unwrap(KvPool::decode({reinterpret_cast<const std::uint8_t*>(b.c_str()), b.size()}));
          },
          "data"_a);
}

void bind_plans(nb::module_& m) {
  nb::class_<BlockPlan>(m, "BlockPlan",
                        "Index arrays of one planned transfer; reuse one per worker to plan without allocating. "
                        "local_indices()/remote_indices() return copies.")
      .def(nb::init<>())
      .def("local_indices", [](const BlockPlan& p) { return copy_to_numpy(p.local_indices()); })
      .def("remote_indices", [](const BlockPlan& p) { return copy_to_numpy(p.remote_indices()); })
      .def("pairs", &BlockPlan::pairs)
      .def("bytes", &BlockPlan::bytes)
      .def("runs",
           [](const BlockPlan& p) {
             std::vector<std::uint32_t> flat;
             for (const BlockRun& r : p.runs()) flat.insert(flat.end(), {r.local_first, r.remote_first, r.count});
             return nb::object(nb::cast(copy_to_numpy(flat)).attr("reshape")(-1, 3));
           },
           "An (R, 3) array of local_first, remote_first, count.")
      .def("first_lane", &BlockPlan::first_lane)
      .def("end_lane", &BlockPlan::end_lane)
      .def("merged_descriptors", &BlockPlan::merged_descriptors)
      .def("op", &BlockPlan::op)
      .def("reserve", &BlockPlan::reserve, "pairs"_a);

  nb::class_<BlockPlanner>(m, "BlockPlanner", "Block ids -> index arrays for one pair of layouts.")
      .def_static(
          "create",
          [](const KvLayout& local, const KvLayout& remote) { return unwrap(BlockPlanner::create(local, remote)); },
          "local"_a, "remote"_a)
      .def(
          "plan",
          [](const BlockPlanner& p, nb::handle op, nb::handle source_blocks, nb::handle destination_blocks,
             std::optional<std::tuple<std::uint32_t, std::uint32_t>> layers, BlockPlan* out) -> nb::object {
            if (out) {
              plan_blocks(p, op, source_blocks, destination_blocks, layers, out);
              return nb::none();
            }
            return nb::cast(plan_blocks(p, op, source_blocks, destination_blocks, layers, nullptr));
          },
          "op"_a, "source_blocks"_a, "destination_blocks"_a, "layers"_a = nb::none(), "out"_a = nb::none(),
          "Plans moving source block i into destination block i in every lane of `layers` ((first, count), all "
          "when None). Into `out` (returns None) or a new BlockPlan.")
      .def_prop_ro("local_layout", &BlockPlanner::local_layout)
      .def_prop_ro("remote_layout", &BlockPlanner::remote_layout);
}

void bind_links(nb::module_& m) {
  nb::class_<KvLink>(m, "KvLink", "A local pool's link to one peer's pool: checked and prepared once.")
      .def_prop_ro("peer", &KvLink::peer)
      .def_prop_ro("local_pool", &KvLink::local_pool)
      .def_prop_ro("remote_pool", &KvLink::remote_pool)
      .def_prop_ro("planner", &KvLink::planner)
      .def(
          "plan",
          [](const KvLink& l, nb::handle op, nb::handle source_blocks, nb::handle destination_blocks,
             std::optional<std::tuple<std::uint32_t, std::uint32_t>> layers, BlockPlan* out) -> nb::object {
            if (out) {
              plan_blocks(l.planner(), op, source_blocks, destination_blocks, layers, out);
              return nb::none();
            }
            return nb::cast(plan_blocks(l.planner(), op, source_blocks, destination_blocks, layers, nullptr));
          },
          "op"_a, "source_blocks"_a, "destination_blocks"_a, "layers"_a = nb::none(), "out"_a = nb::none(),
          "READ: source blocks are the peer's, destination ours; WRITE: the other way round.")
      .def(
          "create_transfer",
          [](const KvLink& l, PyAgent& agent, const BlockPlan& plan, nb::handle notification, std::uint64_t tag,
             std::string backend) {
            TransferOptions options = transfer_options(notification, tag, std::move(backend));
            auto a = agent.get();
            nb::gil_scoped_release release;
            return unwrap(l.create_transfer(*a, plan, std::move(options)));
          },
          "agent"_a, "plan"_a, nb::kw_only(), "notification"_a = nb::none(), "tag"_a = 0, "backend"_a = "",
          "The plan's strided transfer over the two pools' lanes (prepared once).");

  nb::class_<LocalKvPool>(m, "LocalKvPool", "A pool on an Agent: published in its metadata, prepared once.")
      .def_static(
          "attach",
          [](PyAgent& agent, const KvPool& pool, const std::string& key) {
            auto a = agent.get();
            nb::gil_scoped_release release;
            return unwrap(LocalKvPool::attach(*a, pool, key));
          },
          "agent"_a, "pool"_a, "key"_a = std::string(kKvPoolMetadataKey))
      .def_prop_ro("pool", &LocalKvPool::pool)
      .def_prop_ro("blocks", &LocalKvPool::blocks)
      .def_prop_ro("lanes", &LocalKvPool::lanes)
      .def(
          "link",
          [](const LocalKvPool& p, PyAgent& agent, const std::string& peer, const std::string& key) {
            auto a = agent.get();
            nb::gil_scoped_release release;
            return unwrap(p.link(*a, peer, key));
          },
          "agent"_a, "peer"_a, "key"_a = std::string(kKvPoolMetadataKey),
          "Reads the peer's pool from its loaded metadata, checks it (kvferry.FailedPrecondition names every "
          "differing field) and prepares its blocks.");

  m.attr("KV_POOL_METADATA_KEY") = std::string(kKvPoolMetadataKey);
  m.def(
      "check_kv_compatible",
      [](const KvLayout& ours, const KvLayout& theirs, const std::string& peer) {
        check(check_kv_compatible(ours, theirs, peer));
      },
      "ours"_a, "theirs"_a, "peer"_a = "");
  m.def(
      "publish_kv_pool",
      [](PyAgent& agent, const KvPool& pool, const std::string& key) { check(publish_kv_pool(*agent.get(), pool, key)); },
      "agent"_a, "pool"_a, "key"_a = std::string(kKvPoolMetadataKey));
  m.def(
      "remote_kv_pool",
      [](PyAgent& agent, const std::string& peer, const std::string& key) {
        return unwrap(remote_kv_pool(*agent.get(), peer, key));
      },
      "agent"_a, "peer"_a, "key"_a = std::string(kKvPoolMetadataKey));
}

void bind_token_blocks(nb::module_& m) {
  m.def(
      "blocks_after_prefix_hit",
      [](nb::handle block_table, std::uint64_t cached_tokens, std::uint32_t block_tokens) {
        IndexArray table(block_table);
        return copy_to_numpy(blocks_after_prefix_hit(table.span(), cached_tokens, block_tokens));
      },
      "block_table"_a, "cached_tokens"_a, "block_tokens"_a,
      "The tail of `block_table` that still moves when the peer holds the first `cached_tokens` tokens.");
  m.def(
      "blocks_of_slot_runs",
      [](const KvLayout& layout, nb::handle runs) {
        nb::object a = nb::module_::import_("numpy").attr("asarray")(runs, "dtype"_a = "uint64");
        auto arr = nb::cast<nb::ndarray<const std::uint64_t, nb::c_contig, nb::device::cpu>>(
            nb::module_::import_("numpy").attr("ascontiguousarray")(a), false);
        if (arr.size() % 2 != 0)
          throw StatusError(InvalidArgument("slot runs are an (N, 2) array of first_slot, count"));
        std::vector<SlotRun> slot_runs(arr.size() / 2);
        for (std::size_t i = 0; i < slot_runs.size(); ++i) slot_runs[i] = SlotRun{arr.data()[2 * i], arr.data()[2 * i + 1]};
        std::vector<std::uint32_t> out;
        check(append_blocks_of_slot_runs(layout, slot_runs, out));
        return copy_to_numpy(out);
      },
      "layout"_a, "runs"_a,
      "SGLang token slots: the block ids holding `runs` ((N, 2) of first_slot, count), as a uint32 array.");
}

}  // namespace

void bind_kv(nb::module_& m) {
  bind_layout(m);
  bind_pool(m);
  bind_plans(m);
  bind_links(m);
  bind_token_blocks(m);
}

}  // namespace kvferry::python
