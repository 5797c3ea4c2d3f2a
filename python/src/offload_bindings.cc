// KV offload and onboard (kvferry/kv/offload.h): blocks of a pool to a store directory
// and back. Both calls block (GIL released) up to the options' timeout.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "kvferry/kv/offload.h"
#include "memory_args.h"
#include "py_agent.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace kvferry::python {
namespace {

KvPoolView view_of(nb::handle pool) {
  if (nb::isinstance<KvPoolView>(pool)) return nb::cast<KvPoolView>(pool);
  return offload_view(nb::cast<const KvPool&>(pool));
}

KvStoreOptions store_options(bool checksums, bool overwrite, bool sync, bool verify, KvVramPath vram_path,
                             std::uint64_t staging_bytes, double timeout) {
  KvStoreOptions o;
  o.checksums = checksums;
  o.overwrite = overwrite;
  o.sync = sync;
  o.verify = verify;
  o.vram_path = vram_path;
  o.staging_bytes = staging_bytes;
  o.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(seconds_arg(timeout, "timeout"));
  return o;
}

}  // namespace

void bind_offload(nb::module_& m) {
  nb::enum_<KvVramPath>(m, "KvVramPath")
      .value("AUTO", KvVramPath::kAuto)
      .value("GDS", KvVramPath::kGds)
      .value("STAGING", KvVramPath::kStaging);

  nb::class_<KvPoolView>(m, "KvPoolView", "The segments of every block of a pool, for offload and onboard.")
      .def_ro("kind", &KvPoolView::kind)
      .def_ro("device", &KvPoolView::device)
      .def_ro("blocks", &KvPoolView::blocks)
      .def_ro("geometry", &KvPoolView::geometry);
  m.def("offload_view", &offload_view, "pool"_a);

  nb::class_<KvStoreInfo>(m, "KvStoreInfo")
      .def_ro("directory", &KvStoreInfo::directory)
      .def_ro("geometry", &KvStoreInfo::geometry)
      .def_ro("segment_bytes", &KvStoreInfo::segment_bytes)
      .def_ro("block_bytes", &KvStoreInfo::block_bytes)
      .def_ro("source_blocks", &KvStoreInfo::source_blocks)
      .def_ro("checksums", &KvStoreInfo::checksums);
  nb::class_<KvStoreResult>(m, "KvStoreResult")
      .def_ro("store", &KvStoreResult::store)
      .def_ro("bytes", &KvStoreResult::bytes)
      .def_ro("seconds", &KvStoreResult::seconds)
      .def_ro("io_seconds", &KvStoreResult::io_seconds)
      .def_ro("path", &KvStoreResult::path)
      .def_ro("verified", &KvStoreResult::verified);

  m.def(
      "offload_blocks",
      [](PyAgent& agent, nb::handle pool, nb::handle blocks, const std::string& directory, bool checksums,
         bool overwrite, bool sync, KvVramPath vram_path, std::uint64_t staging_bytes, double timeout) {
        KvPoolView view = view_of(pool);
        IndexArray ids(blocks);
        KvStoreOptions o = store_options(checksums, overwrite, sync, true, vram_path, staging_bytes, timeout);
        auto a = agent.get();
        nb::gil_scoped_release release;
        return unwrap(offload_blocks(*a, view, ids.span(), directory, o));
      },
      "agent"_a, "pool"_a, "blocks"_a, "directory"_a, nb::kw_only(), "checksums"_a = true, "overwrite"_a = false,
      "sync"_a = true, "vram_path"_a = KvVramPath::kAuto, "staging_bytes"_a = 16ull << 20, "timeout"_a = 120.0,
      "Writes blocks `blocks` of `pool` (a KvPool or KvPoolView registered with `agent`) to a new store in "
      "`directory`.");
  m.def(
      "onboard_blocks",
      [](PyAgent& agent, nb::handle pool, const std::string& directory, nb::handle blocks, nb::handle entries,
         bool verify, KvVramPath vram_path, std::uint64_t staging_bytes, double timeout) {
        KvPoolView view = view_of(pool);
        IndexArray ids(blocks);
        std::optional<IndexArray> which;
        if (!entries.is_none()) which.emplace(entries);
        KvStoreOptions o = store_options(true, false, true, verify, vram_path, staging_bytes, timeout);
        auto a = agent.get();
        nb::gil_scoped_release release;
        return unwrap(onboard_blocks(*a, view, directory, ids.span(),
                                     which ? which->span() : std::span<const std::uint32_t>{}, o));
      },
      "agent"_a, "pool"_a, "directory"_a, "blocks"_a, "entries"_a = nb::none(), nb::kw_only(), "verify"_a = true,
      "vram_path"_a = KvVramPath::kAuto, "staging_bytes"_a = 16ull << 20, "timeout"_a = 120.0,
      "Reads the store's entries (all when None) into blocks `blocks` of `pool`.");
  m.def(
      "inspect_store", [](const std::string& directory) { return unwrap(inspect_store(directory)); }, "directory"_a,
      nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace kvferry::python
