#include "memory_args.h"

// numpy's C API for the hot path of index arrays: a type check and field reads instead of
// a buffer export (which builds a format string and allocates on every call).
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <bit>
#include <string>

#include "errors.h"

namespace nb = nanobind;

namespace kvferry::python {
namespace {

using DescriptorNdarray = nb::ndarray<const std::uint64_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

nb::object arrays_module() { return nb::module_::import_("kvferry._arrays"); }

[[noreturn]] void invalid(std::string message) { throw StatusError(InvalidArgument(std::move(message))); }

std::string py_type_name(nb::handle object) { return nb::type_name(object.type()).c_str(); }

bool c_contiguous(const nb::ndarray<>& a) {
  std::int64_t expected = 1;
  for (std::size_t i = a.ndim(); i-- > 0;) {
    if (a.shape(i) != 1 && a.stride(i) != expected) return false;
    expected *= static_cast<std::int64_t>(a.shape(i));
  }
  return true;
}

MemoryKind kind_of_device(int device_type) {
  // DLPack: 1 CPU, 3 CUDA pinned host memory -> dram; 2 CUDA, 13 CUDA managed -> vram.
  if (device_type == nb::device::cuda::value || device_type == nb::device::cuda_managed::value)
    return MemoryKind::kVram;
  if (device_type == nb::device::cpu::value || device_type == nb::device::cuda_host::value) return MemoryKind::kDram;
  invalid("memory on DLPack device type " + std::to_string(device_type) + " is not supported (cpu or cuda)");
}

std::optional<Region> region_of_ndarray(nb::handle object) {
  nb::ndarray<> a;
  if (!nb::try_cast(object, a, false)) return std::nullopt;
  if (!c_contiguous(a)) invalid("a " + py_type_name(object) + " that is not C-contiguous cannot be one memory region");
  Region r;
  r.descriptor = Descriptor{reinterpret_cast<std::uint64_t>(a.data()), a.nbytes(),
                            static_cast<std::uint32_t>(a.device_id())};
  r.kind = kind_of_device(a.device_type());
  return r;
}

// Objects that only speak __cuda_array_interface__ (numba) or data_ptr() (tensors whose
// DLPack export failed).
std::optional<Region> region_of_protocols(nb::handle object) {
  if (nb::hasattr(object, "__cuda_array_interface__")) {
    nb::dict cai = nb::cast<nb::dict>(object.attr("__cuda_array_interface__"));
    if (cai.contains("strides") && !cai["strides"].is_none())
      invalid("a " + py_type_name(object) + " with strides cannot be one memory region");
    std::uint64_t count = 1;
    for (nb::handle d : nb::cast<nb::tuple>(cai["shape"])) count *= nb::cast<std::uint64_t>(d);
    std::string typestr = nb::cast<std::string>(cai["typestr"]);
    std::uint64_t itemsize = std::stoull(typestr.substr(2));
    std::uint32_t device = 0;
    if (nb::hasattr(object, "device") && nb::hasattr(object.attr("device"), "id"))
      device = nb::cast<std::uint32_t>(object.attr("device").attr("id"));
    Region r{Descriptor{nb::cast<std::uint64_t>(nb::cast<nb::tuple>(cai["data"])[0]), count * itemsize, device},
             MemoryKind::kVram};
    return r;
  }
  if (nb::hasattr(object, "data_ptr") && nb::hasattr(object, "element_size")) {
    if (nb::hasattr(object, "is_contiguous") && !nb::cast<bool>(object.attr("is_contiguous")()))
      invalid("a " + py_type_name(object) + " that is not contiguous cannot be one memory region");
    std::uint64_t bytes = nb::cast<std::uint64_t>(object.attr("numel")()) *
                          nb::cast<std::uint64_t>(object.attr("element_size")());
    bool cuda = nb::hasattr(object, "is_cuda") && nb::cast<bool>(object.attr("is_cuda"));
    std::uint32_t device = cuda ? nb::cast<std::uint32_t>(object.attr("get_device")()) : 0;
    return Region{Descriptor{nb::cast<std::uint64_t>(object.attr("data_ptr")()), bytes, device},
                  cuda ? MemoryKind::kVram : MemoryKind::kDram};
  }
  return std::nullopt;
}

std::optional<Descriptor> descriptor_of_tuple(nb::handle object) {
  if (!nb::isinstance<nb::tuple>(object)) return std::nullopt;
  nb::tuple t = nb::borrow<nb::tuple>(object);
  if (t.size() != 2 && t.size() != 3) invalid("a descriptor tuple is (address, length[, device]), got " +
                                              std::to_string(t.size()) + " items");
  Descriptor d;
  try {
    d.address = nb::cast<std::uint64_t>(t[0]);
    d.length = nb::cast<std::uint64_t>(t[1]);
    if (t.size() == 3) d.device = nb::cast<std::uint32_t>(t[2]);
  } catch (const nb::cast_error&) {
    invalid("a descriptor tuple holds non-negative integers (address, length[, device])");
  }
  return d;
}

bool is_sequence(nb::handle object) { return nb::isinstance<nb::list>(object) || nb::isinstance<nb::tuple>(object); }

}  // namespace

namespace {

// The struct-module format of a native 4-byte unsigned integer: "I", optionally with the
// native ('@', '=') or, on a little-endian host, the little-endian ('<') prefix.
bool is_u32_format(const char* format) {
  if (format == nullptr) return false;
  if (*format == '@' || *format == '=' || (*format == '<' && std::endian::native == std::endian::little)) ++format;
  return format[0] == 'I' && format[1] == '\0' && sizeof(unsigned int) == 4;
}

}  // namespace

namespace {
bool numpy_api = false;  // set once at import, with the GIL held
}  // namespace

void import_numpy_api() {
  if (_import_array() < 0) {
    PyErr_Clear();  // the buffer protocol path below still works
    return;
  }
  numpy_api = true;
}

IndexArray::IndexArray(nb::handle object) {
  // A 1-D, C-contiguous, aligned, native-order uint32 numpy array: read in place.
  if (numpy_api && PyArray_Check(object.ptr())) {
    auto* a = reinterpret_cast<PyArrayObject*>(object.ptr());
    if (PyArray_NDIM(a) == 1 && PyArray_TYPE(a) == NPY_UINT32 && PyArray_ISCARRAY_RO(a) && PyArray_ISNOTSWAPPED(a)) {
      held_ = nb::borrow(object);
      span_ = {static_cast<const std::uint32_t*>(PyArray_DATA(a)), static_cast<std::size_t>(PyArray_DIM(a, 0))};
      return;
    }
  }
  // PyBUF_ND asks for a C-contiguous buffer (exporters refuse otherwise); read-only is fine.
  if (PyObject_CheckBuffer(object.ptr())) {
    if (PyObject_GetBuffer(object.ptr(), &view_, PyBUF_ND | PyBUF_FORMAT) == 0) {
      if (view_.ndim == 1 && view_.itemsize == 4 && is_u32_format(view_.format) &&
          reinterpret_cast<std::uintptr_t>(view_.buf) % alignof(std::uint32_t) == 0) {
        span_ = {static_cast<const std::uint32_t*>(view_.buf), static_cast<std::size_t>(view_.shape[0])};
        return;
      }
      PyBuffer_Release(&view_);  // another type or shape: the paths below
    } else {
      PyErr_Clear();  // e.g. not contiguous: converted below
    }
  }
  if (!nb::try_cast(object, array_, false)) {
    nb::object converted = arrays_module().attr("as_index_array")(object);
    array_ = nb::cast<IndexNdarray>(converted, false);
  }
  span_ = {array_.data(), array_.shape(0)};
}

IndexArray::~IndexArray() {
  if (view_.obj != nullptr) PyBuffer_Release(&view_);
}

std::optional<MemoryKind> kind_of(nb::handle object) {
  if (object.is_none()) return std::nullopt;
  if (nb::isinstance<MemoryKind>(object)) return nb::cast<MemoryKind>(object);
  if (nb::isinstance<nb::str>(object)) {
    MemoryKind kind;
    std::string text = nb::cast<std::string>(object);
    if (!parse_memory_kind(text, &kind)) invalid("unknown memory kind '" + text + "' (dram, vram or file)");
    return kind;
  }
  invalid("a memory kind is a MemoryKind or one of 'dram', 'vram', 'file'; got a " + py_type_name(object));
}

std::optional<Region> region_of(nb::handle object, std::optional<MemoryKind> kind) {
  std::optional<Region> r;
  if (std::optional<Descriptor> d = descriptor_of_tuple(object)) {
    r = Region{*d, MemoryKind::kDram};
  } else {
    r = region_of_ndarray(object);
    if (!r) r = region_of_protocols(object);
  }
  if (r && kind) r->kind = *kind;
  return r;
}

DescriptorList regions_of(nb::handle object, std::optional<MemoryKind> kind, std::vector<nb::object>* keep) {
  if (nb::isinstance<DescriptorList>(object)) {
    const auto& list = nb::cast<const DescriptorList&>(object);
    if (kind && *kind != list.kind()) invalid("kind differs from the DescriptorList's own kind");
    return list;
  }
  std::vector<Region> regions;
  std::vector<nb::handle> owners;
  auto add = [&](nb::handle item) {
    std::optional<Region> r = region_of(item, kind);
    if (!r)
      invalid("cannot register a " + py_type_name(item) +
              ": expected an array or tensor, an (address, length[, device]) tuple, a DescriptorList, or a list of them");
    regions.push_back(*r);
    owners.push_back(item);
  };
  if (std::optional<Region> single = region_of(object, kind)) {
    regions.push_back(*single);
    owners.push_back(object);
  } else if (is_sequence(object)) {
    for (nb::handle item : object) add(item);
  } else {
    add(object);
  }
  if (regions.empty()) invalid("no memory regions given");
  MemoryKind k = regions.front().kind;
  DescriptorList list(k);
  list.reserve(regions.size());
  for (std::size_t i = 0; i < regions.size(); ++i) {
    if (regions[i].kind != k)
      invalid("regions of one call must be of one memory kind: item 0 is " + std::string(to_string(k)) + ", item " +
              std::to_string(i) + " is " + std::string(to_string(regions[i].kind)));
    list.add(regions[i].descriptor);
    if (keep) keep->push_back(nb::isinstance<nb::tuple>(owners[i]) ? nb::none() : nb::borrow(owners[i]));
  }
  return list;
}

DescriptorList descriptors_of(nb::handle object, std::optional<MemoryKind> kind) {
  if (nb::isinstance<DescriptorList>(object)) {
    const auto& list = nb::cast<const DescriptorList&>(object);
    if (kind && *kind != list.kind()) invalid("kind differs from the DescriptorList's own kind");
    return list;
  }
  MemoryKind k = kind.value_or(MemoryKind::kDram);
  DescriptorList list(k);
  if (is_sequence(object) && nb::len(object) > 0 && nb::isinstance<nb::tuple>(object[0])) {
    list.reserve(nb::len(object));
    for (nb::handle item : object) {
      std::optional<Descriptor> d = descriptor_of_tuple(item);
      if (!d) invalid("a list of descriptors holds (address, length[, device]) tuples only");
      list.add(*d);
    }
    return list;
  }
  DescriptorNdarray a;
  if (!nb::try_cast(object, a, false)) {
    nb::object converted = arrays_module().attr("as_descriptor_array")(object);
    a = nb::cast<DescriptorNdarray>(converted, false);
  }
  const std::size_t n = a.shape(0), columns = a.shape(1);
  if (columns != 2 && columns != 3)
    invalid("descriptors must be an (N, 2) or (N, 3) array; got " + std::to_string(columns) + " columns");
  const std::uint64_t* p = a.data();
  list.reserve(n);
  for (std::size_t i = 0; i < n; ++i, p += columns) {
    std::uint64_t device = columns == 3 ? p[2] : 0;
    if (device > UINT32_MAX) invalid("descriptor " + std::to_string(i) + ": device " + std::to_string(device) + " too large");
    list.add(p[0], p[1], static_cast<std::uint32_t>(device));
  }
  return list;
}

}  // namespace kvferry::python
