// Strided block transfers (kvferry/block_lanes.h): lanes prepared once, then per request
// two numpy uint32 block-id arrays, used in place.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "kvferry/block_lanes.h"
#include "memory_args.h"
#include "py_agent.h"
#include "request_args.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace kvferry::python {
namespace {

void bind_lane_types(nb::module_& m) {
  nb::class_<BlockLanes>(m, "BlockLanes",
                         "Lanes of equal blocks: block b of lane l starts at lane_addresses[l] + b * block_stride "
                         "and is block_bytes long; block ids [0, blocks) exist in every lane. A plain value "
                         "(KvPool.block_lanes() makes one for a pool).")
      .def(
          "__init__",
          [](BlockLanes* self, nb::handle kind, std::vector<std::uint64_t> lane_addresses, std::uint64_t block_stride,
             std::uint64_t block_bytes, std::uint32_t blocks, std::uint32_t device) {
            new (self) BlockLanes{kind_of(kind).value_or(MemoryKind::kDram), device, std::move(lane_addresses),
                                  block_stride, block_bytes, blocks};
          },
          "kind"_a, "lane_addresses"_a, "block_stride"_a, "block_bytes"_a, "blocks"_a, "device"_a = 0)
      .def_rw("kind", &BlockLanes::kind)
      .def_rw("device", &BlockLanes::device)
      .def_rw("lane_addresses", &BlockLanes::lane_addresses)
      .def_rw("block_stride", &BlockLanes::block_stride)
      .def_rw("block_bytes", &BlockLanes::block_bytes)
      .def_rw("blocks", &BlockLanes::blocks)
      .def("__repr__", [](const BlockLanes& l) {
        return "BlockLanes(" + std::string(to_string(l.kind)) + ", " + std::to_string(l.lane_addresses.size()) +
               " lanes x " + std::to_string(l.blocks) + " blocks of " + std::to_string(l.block_bytes) + " B, stride " +
               std::to_string(l.block_stride) + ")";
      });

  nb::class_<PreparedLanes>(m, "PreparedLanes",
                            "Lanes validated once (Agent.prepare_local_lanes / prepare_remote_lanes), for strided "
                            "transfers. Immutable; safe to share between threads.")
      .def_prop_ro("valid", &PreparedLanes::valid)
      .def_prop_ro("lanes", &PreparedLanes::lanes)
      .def_prop_ro("blocks", &PreparedLanes::blocks)
      .def_prop_ro("kind", &PreparedLanes::kind)
      .def_prop_ro("is_local", &PreparedLanes::is_local)
      .def_prop_ro("peer", &PreparedLanes::peer);
}

}  // namespace

void bind_lanes(nb::module_& m, nb::class_<PyAgent>& c) {
  bind_lane_types(m);
  c.def(
       "prepare_local_lanes",
       [](PyAgent& self, const BlockLanes& lanes) {
         auto agent = self.get();
         nb::gil_scoped_release release;
         return unwrap(agent->prepare_local_lanes(lanes));
       },
       "lanes"_a, "Checks every lane against registered memory once, whole.")
      .def(
          "prepare_remote_lanes",
          [](PyAgent& self, const std::string& peer, const BlockLanes& lanes) {
            auto agent = self.get();
            nb::gil_scoped_release release;
            return unwrap(agent->prepare_remote_lanes(peer, lanes));
          },
          "peer"_a, "lanes"_a, "Checks every lane against the peer's announced regions once, whole.")
      .def(
          "create_transfer",
          [](PyAgent& self, nb::handle op, const PreparedLanes& local, const PreparedLanes& remote,
             nb::handle local_blocks, nb::handle remote_blocks, std::uint32_t first_lane,
             std::optional<std::uint32_t> lane_count, nb::handle notification, std::uint64_t tag,
             std::string backend) {
            TransferOp o = op_of(op);
            IndexArray lb(local_blocks), rb(remote_blocks);
            LaneTransfer t{lb.span(), rb.span(), first_lane, lane_count.value_or(LaneTransfer::kToLastLane)};
            TransferOptions options = transfer_options(notification, tag, std::move(backend));
            auto agent = self.get();
            nb::gil_scoped_release release;
            return unwrap(agent->create_transfer(o, local, remote, t, std::move(options)));
          },
          "op"_a, "local"_a, "remote"_a, "local_blocks"_a, "remote_blocks"_a, nb::kw_only(), "first_lane"_a = 0,
          "lane_count"_a = nb::none(), "notification"_a = nb::none(), "tag"_a = 0, "backend"_a = "",
          "Strided transfer (the engines' hot path): local block local_blocks[i] pairs with remote block "
          "remote_blocks[i] in every lane of [first_lane, first_lane + lane_count) (to the last lane when None). "
          "Block ids: uint32 C-contiguous numpy arrays are used in place; costs O(lanes + blocks).");
}

}  // namespace kvferry::python
