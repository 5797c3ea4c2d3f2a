// A shm ring (backends/shm/shm_ring.h) whose indices and bytes the other process wrote
// at will: pops never read outside the ring, never return more than the payload cap, and
// a bad ring is reported corrupt, not crashed on.
#include <cstdlib>
#include <cstring>
#include <memory>

#include "backends/shm/shm_ring.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kvferry::detail::shm;
  static auto* ring = new Ring();
  if (size < 16) return 0;
  std::uint64_t head, tail;
  std::memcpy(&head, data, 8);
  std::memcpy(&tail, data + 8, 8);
  // Small offsets mostly, so records line up; any value sometimes.
  if (!(head & (1ull << 63))) head = tail + (head % (size + 64));
  ring->head.store(head);
  ring->tail.store(tail);
  const std::size_t n = std::min<std::size_t>(size - 16, kRingBytes);
  for (std::size_t i = 0; i < n; ++i) ring->data[(tail + i) % kRingBytes] = data[16 + i];
  Record rec;
  kvferry::Status err;
  for (int i = 0; i < 64 && ring_pop(*ring, &rec, &err); ++i)
    if (rec.payload.size() > kMaxRecordPayload) std::abort();
  (void)ring_empty(*ring);
  // And a push after whatever state that left: must fail or fit, never overrun.
  (void)ring_push(*ring, RecordType::kNotifyAck, 7, data, static_cast<std::uint32_t>(std::min<std::size_t>(size, 512)));
  return 0;
}
