// Shared-memory signalling between two processes of one host: single-producer,
// single-consumer byte rings of records, and a "sleeping" flag per consumer so that a
// producer wakes the consumer (through an eventfd the consumer handed over) only when it
// actually sleeps. Fast when busy (the consumer spins and sees records within
// nanoseconds), idle when idle (the consumer blocks in epoll).
//
// Everything in shared memory is written by the other process at any time: a consumer
// reads head/tail once, checks them, copies a record header out once, checks it, and
// copies the payload out before using it. A bad value marks the channel corrupt.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "kvferry/status.h"

namespace kvferry::detail::shm {

inline constexpr std::uint64_t kRingBytes = 1u << 20;
inline constexpr std::uint32_t kMaxRecordPayload = 256u << 10;

enum class RecordType : std::uint32_t {
  kNotify = 1,     // initiator -> target: req (0: standalone), payload = message
  kNotifyAck = 2,  // target -> initiator: req, payload empty (kept) or why it was refused
};

struct RecordHeader {
  std::uint32_t type;
  std::uint32_t length;  // payload bytes
  std::uint64_t req;
};

struct alignas(64) Ring {
  alignas(64) std::atomic<std::uint64_t> head;  // bytes ever produced
  alignas(64) std::atomic<std::uint64_t> tail;  // bytes ever consumed
  alignas(64) std::atomic<std::uint32_t> consumer_sleeping;
  std::uint8_t data[kRingBytes];
};

// One per (initiator, target) pair; created by the initiator, mapped by both.
struct ControlBlock {
  std::uint64_t magic;
  Ring to_target;
  Ring to_initiator;
};
inline constexpr std::uint64_t kControlMagic = 0x4b56464d53484d31ull;  // "KVFMSHM1"

// Appends one record. Single producer (the caller serialises). Fails if it does not fit.
bool ring_push(Ring& ring, RecordType type, std::uint64_t req, const void* payload, std::uint32_t length);

struct Record {
  RecordType type;
  std::uint64_t req;
  std::string payload;
};
// Takes one record if any. Returns false when empty; a corrupt ring sets *error.
bool ring_pop(Ring& ring, Record* out, Status* error);
bool ring_empty(const Ring& ring);

}  // namespace kvferry::detail::shm
