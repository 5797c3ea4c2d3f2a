// stream_copy: memcpy with non-temporal (streaming) stores, for copies far larger than
// the caches.
//
// Why: a plain store first reads the destination's cache line (read for ownership), so
// a copy moves three bytes over the memory bus per byte copied; a streaming store
// writes the line whole, two bytes per byte. glibc's memcpy streams only single calls
// larger than its threshold (a share of the last-level cache), never the 512 B - 1 MiB
// pieces a KV transfer is made of. Measured on the 2-core VM (docs/benchmarks.md, "TP on
// two cores: the whole prompt, the path the bytes take, streaming stores"): 320 MiB in
// 8 KiB pieces 1.7 GB/s with memcpy, 2.6 with this; 512 B pieces into a 1 KiB stride
// 1.05 against 2.1.
// A job that streams calls stream_fence() before it reports its end: streaming stores
// are weakly ordered, and the peer may read the bytes as soon as it learns of the end.
// Used by the shm backend's copies and the CPU head gather/scatter (kv/tp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace kvferry::detail {

inline void stream_copy(void* destination, const void* source, std::size_t n) {
#if defined(__SSE2__)
  auto* d = static_cast<std::uint8_t*>(destination);
  const auto* s = static_cast<const std::uint8_t*>(source);
  // Plain stores up to the destination's first 16-byte boundary, and for the tail.
  std::size_t head = (16 - (reinterpret_cast<std::uintptr_t>(d) & 15)) & 15;
  if (head > n) head = n;
  // The calls are skipped when empty: a KV piece of 512 B, aligned, has neither part, and
  // two calls of nothing cost ~2% of its copy.
  if (head) std::memcpy(d, s, head);
  d += head;
  s += head;
  n -= head;
  const std::size_t body = n & ~std::size_t{63};
  for (std::size_t i = 0; i < body; i += 64) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 32));
    const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 48), e);
  }
  if (n != body) std::memcpy(d + body, s + body, n - body);
#else
  std::memcpy(destination, source, n);
#endif
}

// Orders this thread's streaming stores before its later stores (the job's end).
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace kvferry::detail
