#include "backends/shm/shm_ring.h"

#include <cstring>

namespace kvferry::detail::shm {
namespace {

constexpr std::uint64_t kAlign = 8;
std::uint64_t padded(std::uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

void copy_in(Ring& ring, std::uint64_t pos, const void* src, std::uint64_t n) {
  const std::uint64_t off = pos % kRingBytes;
  const std::uint64_t first = std::min(n, kRingBytes - off);
  std::memcpy(ring.data + off, src, first);
  std::memcpy(ring.data, static_cast<const std::uint8_t*>(src) + first, n - first);
}

void copy_out(const Ring& ring, std::uint64_t pos, void* dst, std::uint64_t n) {
  const std::uint64_t off = pos % kRingBytes;
  const std::uint64_t first = std::min(n, kRingBytes - off);
  std::memcpy(dst, ring.data + off, first);
  std::memcpy(static_cast<std::uint8_t*>(dst) + first, ring.data, n - first);
}

}  // namespace

bool ring_push(Ring& ring, RecordType type, std::uint64_t req, const void* payload, std::uint32_t length) {
  if (length > kMaxRecordPayload) return false;
  const std::uint64_t head = ring.head.load(std::memory_order_relaxed);
  const std::uint64_t tail = ring.tail.load(std::memory_order_acquire);
  const std::uint64_t need = sizeof(RecordHeader) + padded(length);
  if (head - tail > kRingBytes || kRingBytes - (head - tail) < need) return false;
  RecordHeader h{static_cast<std::uint32_t>(type), length, req};
  copy_in(ring, head, &h, sizeof h);
  if (length) copy_in(ring, head + sizeof h, payload, length);
  // Release: everything written before (the record and, by the caller, the transfer's
  // data) is visible to a consumer that acquires the new head.
  ring.head.store(head + need, std::memory_order_release);
  return true;
}

bool ring_pop(Ring& ring, Record* out, Status* error) {
  const std::uint64_t tail = ring.tail.load(std::memory_order_relaxed);
  const std::uint64_t head = ring.head.load(std::memory_order_acquire);
  if (head == tail) return false;
  const std::uint64_t avail = head - tail;
  if (avail > kRingBytes || avail < sizeof(RecordHeader)) {
    *error = Corrupt("shm ring: the peer published an impossible position");
    return false;
  }
  RecordHeader h;
  copy_out(ring, tail, &h, sizeof h);  // copied once: the peer may change the ring meanwhile
  const std::uint64_t need = sizeof(RecordHeader) + padded(h.length);
  if (h.length > kMaxRecordPayload || need > avail ||
      (h.type != static_cast<std::uint32_t>(RecordType::kNotify) &&
       h.type != static_cast<std::uint32_t>(RecordType::kNotifyAck))) {
    *error = Corrupt("shm ring: malformed record from the peer");
    return false;
  }
  out->type = static_cast<RecordType>(h.type);
  out->req = h.req;
  out->payload.resize(h.length);
  if (h.length) copy_out(ring, tail + sizeof h, out->payload.data(), h.length);
  ring.tail.store(tail + need, std::memory_order_release);
  return true;
}

bool ring_empty(const Ring& ring) {
  return ring.head.load(std::memory_order_acquire) == ring.tail.load(std::memory_order_relaxed);
}

}  // namespace kvferry::detail::shm
