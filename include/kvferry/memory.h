// kvferry/memory.h — memory kinds, regions and descriptors.
//
// Contract
// - A descriptor names bytes: `{address, length, device}`. For `dram` the address is a
//   virtual address in the owning process; for `vram` a device pointer on `device`; for
//   `file` an offset in the file registered as `device`.
// - A `DescriptorList` holds descriptors of one memory kind. It is a plain value; it is
//   not synchronised (do not mutate one list from two threads).
// - Memory kinds are numbered on the wire; new kinds take new numbers, existing numbers
//   never change, so adding a kind does not change the metadata format's version.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string_view>
#include <vector>

namespace kvferry {

enum class MemoryKind : std::uint8_t {
  kDram = 0,  // host memory
  kVram = 1,  // CUDA device memory (device = CUDA device ordinal)
  kFile = 2,  // file contents (device = registered file id, address = offset)
};
inline constexpr int kMemoryKindCount = 3;

std::string_view to_string(MemoryKind kind) noexcept;
// Accepts "dram", "vram", "file"; false if unknown.
bool parse_memory_kind(std::string_view text, MemoryKind* out) noexcept;

// A set of memory kinds, used by backend capabilities.
class MemoryKindSet {
 public:
  constexpr MemoryKindSet() = default;
  constexpr MemoryKindSet(std::initializer_list<MemoryKind> kinds) {
    for (MemoryKind k : kinds) bits_ |= bit(k);
  }
  constexpr bool contains(MemoryKind k) const { return (bits_ & bit(k)) != 0; }
  constexpr void insert(MemoryKind k) { bits_ |= bit(k); }
  constexpr bool empty() const { return bits_ == 0; }

 private:
  static constexpr std::uint32_t bit(MemoryKind k) {
    return 1u << static_cast<unsigned>(k);
  }
  std::uint32_t bits_ = 0;
};

struct Descriptor {
  std::uint64_t address = 0;
  std::uint64_t length = 0;
  std::uint32_t device = 0;

  std::uint64_t end() const { return address + length; }
  friend bool operator==(const Descriptor&, const Descriptor&) = default;
};

// Convenience for host pointers.
inline Descriptor make_descriptor(const void* ptr, std::size_t length, std::uint32_t device = 0) {
  return Descriptor{reinterpret_cast<std::uint64_t>(ptr), length, device};
}

class DescriptorList {
 public:
  explicit DescriptorList(MemoryKind kind = MemoryKind::kDram) : kind_(kind) {}
  DescriptorList(MemoryKind kind, std::vector<Descriptor> descriptors)
      : kind_(kind), descriptors_(std::move(descriptors)) {}

  MemoryKind kind() const { return kind_; }
  void add(Descriptor d) { descriptors_.push_back(d); }
  void add(std::uint64_t address, std::uint64_t length, std::uint32_t device = 0) {
    descriptors_.push_back(Descriptor{address, length, device});
  }
  void reserve(std::size_t n) { descriptors_.reserve(n); }
  void clear() { descriptors_.clear(); }

  std::size_t size() const { return descriptors_.size(); }
  bool empty() const { return descriptors_.empty(); }
  const Descriptor& operator[](std::size_t i) const { return descriptors_[i]; }
  const std::vector<Descriptor>& descriptors() const { return descriptors_; }
  auto begin() const { return descriptors_.begin(); }
  auto end() const { return descriptors_.end(); }

  // Sum of lengths.
  std::uint64_t total_bytes() const;

 private:
  MemoryKind kind_;
  std::vector<Descriptor> descriptors_;
};

}  // namespace kvferry
