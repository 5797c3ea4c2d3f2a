// Python objects -> kvferry descriptors and index spans, without per-element Python.
//
// - Memory: numpy arrays and anything nanobind imports as an ndarray (DLPack: torch,
//   cupy, jax), objects with `__cuda_array_interface__` or `data_ptr()`, explicit
//   `(address, length[, device])` tuples, and lists of these; one region each.
// - Descriptor lists: a DescriptorList, an (N, 2) / (N, 3) integer array of address,
//   length[, device], or a list of tuples.
// - Index arrays: a C-contiguous uint32 numpy array is used in place (a view); any other
//   integer array or list gets one vectorised, range-checked conversion
//   (kvferry/_arrays.py).
// Functions here need the GIL; the spans they hand out stay valid while the holder lives.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "kvferry/memory.h"

namespace kvferry::python {

using IndexNdarray = nanobind::ndarray<const std::uint32_t, nanobind::ndim<1>, nanobind::c_contig,
                                       nanobind::device::cpu>;

// numpy's C API for IndexArray; called once when the module is imported (GIL held).
void import_numpy_api();

// One index array, held alive while its span is used (with the GIL released). Made and
// destroyed with the GIL held. A C-contiguous 1-D uint32 buffer (a numpy array) is used
// in place through the buffer protocol: no Python call and no allocation per array (a
// DLPack import costs a __dlpack__ call, a capsule and its release, several times more
// on the hot path). Anything else is imported as an ndarray or converted once.
class IndexArray {
 public:
  explicit IndexArray(nanobind::handle object);
  ~IndexArray();
  IndexArray(const IndexArray&) = delete;
  IndexArray& operator=(const IndexArray&) = delete;
  std::span<const std::uint32_t> span() const { return span_; }

 private:
  nanobind::object held_;  // a numpy array read in place through numpy's C API
  Py_buffer view_{};       // the buffer-protocol path (view_.obj is set while held)
  IndexNdarray array_;     // the other paths
  std::span<const std::uint32_t> span_;
};

// The memory one Python object spans.
struct Region {
  Descriptor descriptor;
  MemoryKind kind = MemoryKind::kDram;
};

// The region of an array, a tensor or an (address, length[, device]) tuple; nullopt when
// `object` is none of these. `kind` overrides the kind found (tuples default to dram).
std::optional<Region> region_of(nanobind::handle object, std::optional<MemoryKind> kind);

// Regions to register: one object or a list of objects; `keep` receives, per region,
// what must stay alive while registered (the array or tensor; None for a tuple).
DescriptorList regions_of(nanobind::handle object, std::optional<MemoryKind> kind,
                          std::vector<nanobind::object>* keep);

// A descriptor list for prepare_* and create_transfer.
DescriptorList descriptors_of(nanobind::handle object, std::optional<MemoryKind> kind);

// "dram"/"vram"/"file" or a MemoryKind; none -> nullopt.
std::optional<MemoryKind> kind_of(nanobind::handle object);

}  // namespace kvferry::python
