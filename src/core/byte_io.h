// Bounds-checked little-endian encoding for metadata and wire frames.
// ByteReader never reads past its span; every failed read latches an error.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvferry::detail {

class ByteWriter {
 public:
  void u8(std::uint8_t v) { out_.push_back(v); }
  void u16(std::uint16_t v) { raw(&v, sizeof v); }
  void u32(std::uint32_t v) { raw(&v, sizeof v); }
  void u64(std::uint64_t v) { raw(&v, sizeof v); }
  void bytes(std::span<const std::uint8_t> b) { raw(b.data(), b.size()); }
  void str(std::string_view s) { raw(s.data(), s.size()); }
  void raw(const void* p, std::size_t n) {
    if (n == 0) return;
    // resize + memcpy, not insert(): GCC 12 at -O3 reports a false stringop-overflow
    // for vector::insert of a few bytes, which -Werror turns into a failed build.
    const std::size_t at = out_.size();
    out_.resize(at + n);
    std::memcpy(out_.data() + at, p, n);
  }
  // Overwrites 4 bytes at `offset` (for lengths known only later).
  void patch_u32(std::size_t offset, std::uint32_t v) { std::memcpy(out_.data() + offset, &v, 4); }
  std::size_t size() const { return out_.size(); }
  std::vector<std::uint8_t>& buffer() { return out_; }
  std::vector<std::uint8_t> take() { return std::move(out_); }

 private:
  std::vector<std::uint8_t> out_;
};

class ByteReader {
 public:
  explicit ByteReader(std::span<const std::uint8_t> in) : in_(in) {}
  bool ok() const { return ok_; }
  std::size_t remaining() const { return ok_ ? in_.size() - pos_ : 0; }

  std::uint8_t u8() { std::uint8_t v = 0; raw(&v, 1); return v; }
  std::uint16_t u16() { std::uint16_t v = 0; raw(&v, 2); return v; }
  std::uint32_t u32() { std::uint32_t v = 0; raw(&v, 4); return v; }
  std::uint64_t u64() { std::uint64_t v = 0; raw(&v, 8); return v; }
  // A span of the next n bytes (empty and error if fewer remain).
  std::span<const std::uint8_t> take(std::size_t n) {
    if (!ok_ || n > in_.size() - pos_) { ok_ = false; return {}; }
    auto s = in_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  std::string str(std::size_t n) {
    auto s = take(n);
    return std::string(reinterpret_cast<const char*>(s.data()), s.size());
  }

 private:
  void raw(void* p, std::size_t n) {
    if (!ok_ || n > in_.size() - pos_) { ok_ = false; std::memset(p, 0, n); return; }
    std::memcpy(p, in_.data() + pos_, n);
    pos_ += n;
  }
  std::span<const std::uint8_t> in_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace kvferry::detail
