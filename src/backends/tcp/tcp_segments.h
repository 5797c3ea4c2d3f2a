// Segments: where a batch frame's data bytes come from or land, on one side, in the
// strided form the wire carries (tcp_wire.h): `count` units of `unit` bytes, unit k at
// ptr + k * stride. A run of small pieces (a KV head slice per token) is one segment, so
// neither side keeps or walks anything per piece except the iovec it hands the kernel.
//
// SegmentCursor walks a segment list by bytes: it fills iovecs from where it stands and
// advances by what a readv/sendmsg moved, without re-walking what came before.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace kvferry::detail::tcp {

struct Segment {
  std::uint8_t* ptr = nullptr;
  std::uint64_t unit = 0;    // bytes of one unit (> 0)
  std::uint64_t stride = 0;  // bytes from unit k to unit k + 1 (unused when count == 1)
  std::uint64_t count = 1;   // units (> 0)

  std::uint64_t bytes() const { return unit * count; }
  // Bytes from the first unit's start to the last unit's end.
  std::uint64_t extent() const { return (count - 1) * stride + unit; }
};

// A segment of `count` units; one contiguous unit when they touch (stride == unit), so
// that the kernel gets one iovec for them.
inline Segment make_segment(std::uint8_t* ptr, std::uint64_t unit, std::uint64_t stride, std::uint64_t count) {
  if (count <= 1 || stride == unit) return Segment{ptr, unit * count, unit * count, 1};
  return Segment{ptr, unit, stride, count};
}

struct SegmentCursor {
  std::size_t seg = 0;   // segment index
  std::uint64_t k = 0;   // unit within it
  std::uint64_t off = 0; // bytes into that unit

  // Appends iovecs for the bytes from here on, until `iov` holds `max` entries or `bytes`
  // reaches `max_bytes`. Returns the bytes added.
  std::uint64_t fill(const std::vector<Segment>& segs, iovec* iov, int& cnt, int max, std::uint64_t max_bytes) const {
    std::uint64_t bytes = 0;
    std::uint64_t o = off, kk = k;
    for (std::size_t i = seg; i < segs.size() && cnt < max && bytes < max_bytes; ++i, kk = 0) {
      const Segment& g = segs[i];
      for (; kk < g.count && cnt < max && bytes < max_bytes; ++kk, o = 0) {
        iov[cnt++] = {g.ptr + kk * g.stride + o, g.unit - o};
        bytes += g.unit - o;
      }
    }
    return bytes;
  }

  // Moves on by `n` bytes (at most what is left).
  void advance(const std::vector<Segment>& segs, std::uint64_t n) {
    while (n > 0 && seg < segs.size()) {
      const Segment& g = segs[seg];
      const std::uint64_t in_unit = g.unit - off;
      if (n < in_unit) {
        off += n;
        return;
      }
      n -= in_unit;
      off = 0;
      // Whole units after this one, then the next segment.
      const std::uint64_t whole = std::min(n / g.unit, g.count - k - 1);
      k += 1 + whole;
      n -= whole * g.unit;
      if (k == g.count) {
        ++seg;
        k = 0;
      }
    }
  }
};

}  // namespace kvferry::detail::tcp
