// The "kv.pool" metadata entry (format in kv_pool.h). Input to decode() is untrusted.
#include <array>
#include <cstring>
#include <string>

#include "kvferry/kv/kv_pool.h"

namespace kvferry {
namespace {

constexpr std::array<std::uint8_t, 4> kMagic = {'K', 'V', 'P', 'L'};
constexpr std::uint8_t kVersion = 1;
// Fixed part: magic, 4 bytes of version/arrangement/dtype/kind, 7 u32 fields.
constexpr std::size_t kFixedBytes = 4 + 4 + 7 * 4;

class Writer {
 public:
  void bytes(const void* data, std::size_t n) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    out_.insert(out_.end(), p, p + n);
  }
  void u8(std::uint8_t v) { out_.push_back(v); }
  void u32(std::uint32_t v) { little_endian(v, 4); }
  void u64(std::uint64_t v) { little_endian(v, 8); }
  std::vector<std::uint8_t> take() { return std::move(out_); }

 private:
  void little_endian(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  std::vector<std::uint8_t> out_;
};

// Reads fields in order; the caller checks the total length first, so reads never fail.
class Reader {
 public:
  explicit Reader(std::span<const std::uint8_t> in) : in_(in) {}
  std::uint8_t u8() { return in_[pos_++]; }
  std::uint32_t u32() { return static_cast<std::uint32_t>(little_endian(4)); }
  std::uint64_t u64() { return little_endian(8); }
  void skip(std::size_t n) { pos_ += n; }

 private:
  std::uint64_t little_endian(int n) {
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= std::uint64_t{in_[pos_++]} << (8 * i);
    return v;
  }
  std::span<const std::uint8_t> in_;
  std::size_t pos_ = 0;
};

}  // namespace

std::vector<std::uint8_t> KvPool::encode() const {
  const KvGeometry& g = layout_.geometry();
  Writer w;
  w.bytes(kMagic.data(), kMagic.size());
  w.u8(kVersion);
  w.u8(static_cast<std::uint8_t>(layout_.arrangement()));
  w.u8(static_cast<std::uint8_t>(g.dtype));
  w.u8(static_cast<std::uint8_t>(kind_));
  for (std::uint32_t v : {g.layers, g.kv_heads, g.head_dim, g.block_tokens, layout_.blocks(), device_,
                          static_cast<std::uint32_t>(tensor_addresses_.size())}) {
    w.u32(v);
  }
  for (std::uint64_t address : tensor_addresses_) w.u64(address);
  return w.take();
}

Result<KvPool> KvPool::decode(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < kFixedBytes) {
    return Corrupt("kv.pool entry: " + std::to_string(bytes.size()) + " bytes, shorter than its fixed part");
  }
  if (std::memcmp(bytes.data(), kMagic.data(), kMagic.size()) != 0) {
    return Corrupt("kv.pool entry: bad magic (not a kvferry KV pool description)");
  }
  Reader r(bytes);
  r.skip(kMagic.size());
  const std::uint8_t version = r.u8();
  if (version != kVersion) {
    return Corrupt("kv.pool entry: version " + std::to_string(version) +
                   " is not understood (this build reads " + std::to_string(kVersion) +
                   "); upgrade the older side");
  }
  const auto arrangement = static_cast<KvArrangement>(r.u8());
  const auto dtype = static_cast<KvDtype>(r.u8());
  const std::uint8_t kind = r.u8();
  if (to_string(arrangement).empty()) return Corrupt("kv.pool entry: unknown arrangement number");
  if (to_string(dtype).empty()) return Corrupt("kv.pool entry: unknown dtype number");
  if (kind >= kMemoryKindCount) return Corrupt("kv.pool entry: unknown memory kind number");
  KvGeometry g;
  g.dtype = dtype;
  g.layers = r.u32();
  g.kv_heads = r.u32();
  g.head_dim = r.u32();
  g.block_tokens = r.u32();
  const std::uint32_t blocks = r.u32();
  const std::uint32_t device = r.u32();
  const std::uint32_t count = r.u32();
  if ((bytes.size() - kFixedBytes) % 8 != 0 || (bytes.size() - kFixedBytes) / 8 != count) {
    return Corrupt("kv.pool entry: announces " + std::to_string(count) + " tensor addresses but carries " +
                   std::to_string(bytes.size() - kFixedBytes) + " bytes of them");
  }
  Result<KvLayout> layout = KvLayout::create(g, arrangement, blocks);
  if (!layout.ok()) return Corrupt("kv.pool entry: " + layout.status().message());
  if (count != layout->tensor_count()) {
    return Corrupt("kv.pool entry: " + std::to_string(count) + " tensor addresses for a layout of " +
                   std::to_string(layout->tensor_count()) + " tensors");
  }
  std::vector<std::uint64_t> addresses(count);
  for (std::uint64_t& address : addresses) address = r.u64();
  Result<KvPool> pool = create(*layout, static_cast<MemoryKind>(kind), std::move(addresses), device);
  if (!pool.ok()) return Corrupt("kv.pool entry: " + pool.status().message());
  return pool;
}

}  // namespace kvferry
