#include "kvferry/kv/staging_slots.h"

#include "kvferry/agent.h"
#include "test_util.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <future>
#include <thread>

namespace kvferry {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<StagingSlots> make(std::uint32_t slots, std::uint64_t slot_bytes = 64u << 10) {
  StagingSlotsOptions o;
  o.slots = slots;
  o.slot_bytes = slot_bytes;
  auto s = StagingSlots::create(o);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(s).value() : nullptr;
}

TEST(StagingSlots, HandsOutAdjacentSlotsInsideTheRegion) {
  auto arena = make(4);
  ASSERT_TRUE(arena);
  const DescriptorList region = arena->region();
  ASSERT_EQ(region.size(), 1u);
  EXPECT_EQ(region[0].length, 4u * (64u << 10));
  auto a = arena->acquire(1, 0ms);
  auto b = arena->acquire(100u << 10, 0ms);  // two slots
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->slot_count(), 1u);
  EXPECT_EQ(b->slot_count(), 2u);
  EXPECT_EQ(b->size(), 128u << 10);
  EXPECT_EQ(arena->slots_in_use(), 3u);
  for (const StagingSlot* s : {&*a, &*b}) {
    EXPECT_GE(s->address(), region[0].address);
    EXPECT_LE(s->address() + s->size(), region[0].end());
    EXPECT_EQ(s->address() % 4096, 0u);
    EXPECT_EQ(s->descriptor(), (Descriptor{s->address(), s->size(), 0}));
    std::memset(s->data(), 0x11, s->size());
  }
  EXPECT_TRUE(a->address() + a->size() <= b->address() || b->address() + b->size() <= a->address());
  a->release();
  EXPECT_FALSE(a->valid());
  a->release();  // twice is harmless
  EXPECT_EQ(arena->slots_in_use(), 2u);
}

TEST(StagingSlots, FullArenaTimesOutNamingTheLoad) {
  auto arena = make(2);
  ASSERT_TRUE(arena);
  auto held = arena->acquire(128u << 10, 0ms);
  ASSERT_TRUE(held.ok());
  const auto start = std::chrono::steady_clock::now();
  auto more = arena->acquire(1, 50ms);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 50ms);
  ASSERT_FALSE(more.ok());
  EXPECT_EQ(more.status().code(), StatusCode::kTimeout);
  EXPECT_NE(more.status().message().find("2 of 2 slots"), std::string::npos) << more.status().message();
  auto now = arena->try_acquire(1);
  EXPECT_EQ(now.status().code(), StatusCode::kUnavailable);
}

TEST(StagingSlots, AReleaseWakesAWaiter) {
  auto arena = make(1);
  ASSERT_TRUE(arena);
  auto held = arena->acquire(1, 0ms);
  ASSERT_TRUE(held.ok());
  auto waiter = std::async(std::launch::async, [&] { return arena->acquire(1, 5s); });
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(waiter.wait_for(0ms), std::future_status::timeout);
  StagingSlot moved = std::move(*held);  // the handle moves; the slot stays taken
  EXPECT_FALSE(held->valid());
  EXPECT_EQ(arena->slots_in_use(), 1u);
  moved.release();
  auto got = waiter.get();
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(got->first_slot(), 0u);
}

TEST(StagingSlots, WaitersAreServedInArrivalOrder) {
  auto arena = make(4);
  ASSERT_TRUE(arena);
  auto a = arena->acquire(2 * (64u << 10), 0ms);  // slots 0-1; 2 left
  ASSERT_TRUE(a.ok());
  auto big = std::async(std::launch::async, [&] { return arena->acquire(3 * (64u << 10), 5s); });
  std::this_thread::sleep_for(30ms);  // `big` is queued first
  // Two slots are free, but the large request came first: the small one waits behind it.
  auto small = arena->acquire(1, 60ms);
  EXPECT_EQ(small.status().code(), StatusCode::kTimeout);
  EXPECT_NE(small.status().message().find("1 request(s) waiting ahead"), std::string::npos)
      << small.status().message();
  a->release();
  auto got = big.get();
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(got->slot_count(), 3u);
  EXPECT_TRUE(arena->acquire(1, 0ms).ok());  // the fourth slot
}

TEST(StagingSlots, RefusesWhatCouldNeverBeServed) {
  auto arena = make(2);
  ASSERT_TRUE(arena);
  auto r = arena->acquire(3 * (64u << 10), 1s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("need 3 slots"), std::string::npos) << r.status().message();
  EXPECT_FALSE(arena->acquire(0, 0ms).ok());
  StagingSlotsOptions o;
  o.slots = 0;
  EXPECT_FALSE(StagingSlots::create(o).ok());
  o.slots = 1;
  o.kind = MemoryKind::kFile;
  EXPECT_FALSE(StagingSlots::create(o).ok());
}

TEST(StagingSlots, ASlotOutlivesItsArena) {
  auto arena = make(2);
  ASSERT_TRUE(arena);
  auto slot = arena->acquire(10, 0ms);
  ASSERT_TRUE(slot.ok());
  arena.reset();
  std::memset(slot->data(), 0x22, slot->size());  // still valid memory (ASan would say)
  EXPECT_EQ(slot->data()[slot->size() - 1], 0x22);
}

TEST(StagingSlots, ManyThreadsNeverOverlap) {
  auto arena = make(3, 4096);
  ASSERT_TRUE(arena);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        auto s = arena->acquire(1 + (i % 2) * 4096, 5s);
        if (!s.ok()) {
          ++failures;
          continue;
        }
        std::memset(s->data(), t, s->size());
        for (std::uint64_t k = 0; k < s->size(); ++k)
          if (s->data()[k] != t) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(arena->slots_in_use(), 0u);
}

TEST(StagingSlots, PinnedOrDeviceMemoryOnlyWhereTheBuildAndMachineHaveIt) {
  StagingSlotsOptions o;
  o.slots = 1;
  o.slot_bytes = 4096;
  o.require_pinned = true;
  auto pinned = StagingSlots::create(o);
  if (pinned.ok()) { EXPECT_TRUE((*pinned)->pinned()); }
  o.kind = MemoryKind::kVram;
  auto device = StagingSlots::create(o);
  if (!device.ok()) {
    EXPECT_TRUE(device.status().code() == StatusCode::kNotSupported ||
                device.status().code() == StatusCode::kUnavailable)
        << device.status().to_string();
  }
#ifndef KVFERRY_HAVE_CUDA
  EXPECT_FALSE(pinned.ok());
  EXPECT_EQ(device.status().code(), StatusCode::kNotSupported);
#endif
}

// A host arena made for a KV pool on GPU 1 (as a TP rank on the second GPU makes it) is
// host memory all the same: its region, its slots and their descriptors say device 0, so
// a write built from a slot's fields on both sides is inside what each agent registered
// and announced.
TEST(StagingSlots, HostArenaOfAPoolOnAnyGpuDescribesItselfAsHostMemory) {
  StagingSlotsOptions o;
  o.slots = 2;
  o.slot_bytes = 64u << 10;
  o.device = 1;
  auto made_local = StagingSlots::create(o);
  auto made_remote = StagingSlots::create(o);
  ASSERT_TRUE(made_local.ok() && made_remote.ok());
  StagingSlots& local = **made_local;
  StagingSlots& remote = **made_remote;
  EXPECT_EQ(local.device(), 0u);
  EXPECT_EQ(local.region()[0].device, 0u);
  auto prefill = testing::make_agent("staging-prefill", "loopback");
  auto decode = testing::make_agent("staging-decode", "loopback");
  ASSERT_TRUE(prefill && decode);
  ASSERT_TRUE(prefill->register_memory(local.region()).ok());
  ASSERT_TRUE(decode->register_memory(remote.region()).ok());
  Result<std::vector<std::uint8_t>> metadata = decode->local_metadata();
  ASSERT_TRUE(metadata.ok());
  Result<std::string> peer = prefill->load_remote(*metadata);
  ASSERT_TRUE(peer.ok()) << peer.status().to_string();
  auto from = local.acquire(1000, 0ms);
  auto to = remote.acquire(1000, 0ms);
  ASSERT_TRUE(from.ok() && to.ok());
  EXPECT_EQ(from->device(), 0u);
  EXPECT_EQ(from->descriptor().device, 0u);
  std::memset(from->data(), 0x5a, 1000);
  std::memset(to->data(), 0, 1000);
  // Built as TpSender builds a staged write: each side's fields, not a GPU id of its own.
  DescriptorList src(from->kind(), {Descriptor{from->address(), 1000, from->device()}});
  DescriptorList dst(to->kind(), {Descriptor{to->address(), 1000, to->device()}});
  Result<TransferRequest> write = prefill->create_transfer(TransferOp::kWrite, src, *peer, dst);
  ASSERT_TRUE(write.ok()) << write.status().to_string();
  ASSERT_TRUE(write->post().ok());
  EXPECT_TRUE(write->wait(5s).ok());
  EXPECT_EQ(std::memcmp(from->data(), to->data(), 1000), 0);
}


// An arena in shared memory: slots lie in it and the arena keeps it mapped for its slots;
// what it cannot be is refused with the numbers.
TEST(StagingSlots, SharedArenaLiesInTheAgentsSharedMemory) {
  auto agent = testing::make_agent("staging-shared", "loopback");
  ASSERT_TRUE(agent);
  StagingSlotsOptions o;
  o.slots = 3;
  o.slot_bytes = 64u << 10;
  Result<SharedMemory> memory = agent->allocate_shared_memory(3 * (64u << 10));
  ASSERT_TRUE(memory.ok()) << memory.status().to_string();
  const auto base = reinterpret_cast<std::uint64_t>(memory->data());
  auto made = StagingSlots::create_shared(std::move(memory).value(), o);
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  EXPECT_EQ((*made)->region()[0].address, base);
  EXPECT_FALSE((*made)->pinned());
  auto slot = (*made)->acquire(100u << 10, 0ms);
  ASSERT_TRUE(slot.ok());
  made->reset();  // the slot keeps the memory
  std::memset(slot->data(), 0x33, 100u << 10);
  EXPECT_EQ(slot->data()[(100u << 10) - 1], 0x33);

  Result<SharedMemory> small = agent->allocate_shared_memory(4096);
  ASSERT_TRUE(small.ok());
  auto refused = StagingSlots::create_shared(std::move(small).value(), o);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("196608"), std::string::npos) << refused.status().to_string();
}

}  // namespace
}  // namespace kvferry
