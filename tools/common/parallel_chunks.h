// parallel_chunks.h — split [0, total) into chunks of whole 4096-element units, one
// thread each (up to 16), and wait for them: filling and checking the bench's large
// reference images in parallel.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace kvferry::cli {

// Calls f(begin, end) once per non-empty chunk, concurrently; every index of [0, total)
// lies in exactly one chunk. Chunk bounds are multiples of 4096 (byte ranges stay
// 8-byte aligned for word-wise patterns).
template <typename F>
void parallel_chunks(std::uint64_t total, F f, unsigned max_threads = 16) {
  const unsigned threads = std::max(1u, std::min(max_threads, std::thread::hardware_concurrency()));
  // Ceiling division: a total below `threads` (one block of a small request) or not a
  // multiple of it still gets every element a thread.
  const std::uint64_t chunk = ((total + threads - 1) / threads + 4095) / 4096 * 4096;
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    const std::uint64_t b = t * chunk, e = std::min(total, b + chunk);
    if (b < e) pool.emplace_back([=] { f(b, e); });
  }
  for (auto& th : pool) th.join();
}

}  // namespace kvferry::cli
