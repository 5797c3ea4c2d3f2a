// The tcp target's vram: a peer writes into and reads from our GPU memory exactly as
// from host memory. The bytes pass through pinned buffers: a write frame's vram
// segments land in the stream's bounce buffer and go to the GPU in one batched copy
// before the frame is acknowledged; a read frame's vram segments are copied out in one
// batched copy before the frame is queued. Frames are at most batch_bytes (4 MiB by
// default), so a copy costs tens of microseconds against milliseconds on the wire.
#include <algorithm>
#include <map>

#include "backends/tcp/tcp_engine.h"
#include "backends/tcp/tcp_session.h"

namespace kvferry::detail::tcp {

namespace {
constexpr std::size_t kPinnedPoolBuffers = 12;  // idle read buffers kept for reuse
// Staged read data queued per stream before further read replies wait: the GPU copies
// out at ~50 GB/s, the socket drains at a few GB/s; without a cap a 2.6 GB read would
// be staged (and pinned) whole before it is sent.
constexpr std::uint64_t kMaxStagedQueuedBytes = 32u << 20;
constexpr std::uint64_t kMinPinnedBytes = 4u << 20;

std::uint64_t round_up_pow2(std::uint64_t n) {
  std::uint64_t v = kMinPinnedBytes;
  while (v < n) v *= 2;
  return v;
}
}  // namespace

Result<DeviceStager*> TcpEngine::stager() {
  if (!stager_) {
    auto s = DeviceStager::instance();
    if (!s.ok()) return s.status();
    stager_ = *s;
  }
  return stager_.get();
}

Result<PinnedBuffer> TcpEngine::take_pinned(std::uint64_t bytes) {
  {
    std::lock_guard lock(pinned_pool_->first);
    auto& pool = pinned_pool_->second;
    auto it = std::find_if(pool.begin(), pool.end(), [&](const PinnedBuffer& b) { return b.size >= bytes; });
    if (it != pool.end()) {
      PinnedBuffer b = std::move(*it);
      pool.erase(it);
      return b;
    }
  }
  KVF_ASSIGN_OR_RETURN(DeviceStager * st, stager());
  return st->allocate_pinned(round_up_pow2(bytes));
}

std::vector<std::pair<std::size_t, int>> TcpEngine::vram_segments(const std::vector<Segment>& segs) const {
  std::vector<std::pair<std::size_t, int>> out;
  if (vram_regions_ == 0) return out;  // the usual case: no lookups at all
  for (std::size_t i = 0; i < segs.size(); ++i) {
    const RegionInfo* r = find_region(reinterpret_cast<std::uint64_t>(segs[i].ptr), segs[i].extent());
    if (r && r->kind == MemoryKind::kVram) out.emplace_back(i, static_cast<int>(r->device));
  }
  return out;
}

std::string TcpEngine::stage_write_to_vram(Stream& s) {
  s.to_vram.clear();
  const auto vram = vram_segments(s.segs);
  if (vram.empty()) return {};
  std::uint64_t need = 0;
  for (const auto& [i, device] : vram) need += s.segs[i].bytes();
  if (s.bounce.size < need) {
    auto b = take_pinned(need);
    if (!b.ok()) return "write into vram refused: " + b.status().message();
    s.bounce = std::move(b).value();
  }
  std::uint64_t off = 0;
  for (const auto& [i, device] : vram) {
    Segment& g = s.segs[i];
    std::uint8_t* landing = s.bounce.data() + off;
    for (std::uint64_t k = 0; k < g.count; ++k)  // a strided segment's units land contiguously
      s.to_vram.push_back(VramLanding{device, StageItem{reinterpret_cast<std::uint64_t>(landing + k * g.unit),
                                                        reinterpret_cast<std::uint64_t>(g.ptr + k * g.stride), g.unit}});
    off += g.bytes();
    g = make_segment(landing, g.bytes(), g.bytes(), 1);
  }
  return {};
}

std::string TcpEngine::land_staged_write(Stream& s) {
  std::map<int, std::vector<StageItem>> by_device;
  std::string error;
  for (const VramLanding& l : s.to_vram) {
    // The region may have been deregistered while the frame was on the wire: then its
    // bytes are dropped, as for host memory.
    const RegionInfo* r = find_region(l.copy.dst, l.copy.length);
    if (!r || r->kind != MemoryKind::kVram) {
      error = "write into vram refused: the memory was deregistered during the transfer";
      continue;
    }
    by_device[l.device].push_back(l.copy);
  }
  s.to_vram.clear();
  auto st = stager();
  for (auto& [device, items] : by_device) {
    Status copied = st.ok() ? (*st)->copy(device, StageMethod::kBatch, items, cfg_.peer_timeout) : st.status();
    if (!copied.ok()) error = "write into vram failed: " + copied.message();
  }
  return error;
}

std::string TcpEngine::stage_read_from_vram(OutFrame& f) {
  const auto vram = vram_segments(f.segments);
  if (vram.empty()) return {};
  std::uint64_t need = 0;
  for (const auto& [i, device] : vram) need += f.segments[i].bytes();
  auto taken = take_pinned(need);
  if (!taken.ok()) return "read of vram refused: " + taken.status().message();
  PinnedBuffer buf = std::move(taken).value();
  std::map<int, std::vector<StageItem>> by_device;
  std::uint64_t off = 0;
  for (const auto& [i, device] : vram) {
    Segment& g = f.segments[i];
    std::uint8_t* copy = buf.data() + off;
    for (std::uint64_t k = 0; k < g.count; ++k)
      by_device[device].push_back(StageItem{reinterpret_cast<std::uint64_t>(g.ptr + k * g.stride),
                                            reinterpret_cast<std::uint64_t>(copy + k * g.unit), g.unit});
    off += g.bytes();
    g = make_segment(copy, g.bytes(), g.bytes(), 1);
  }
  for (auto& [device, items] : by_device) {
    Status copied = stager_->copy(device, StageMethod::kBatch, items, cfg_.peer_timeout);
    // On a timeout the copy may still be running: this buffer is never reused then.
    if (!copied.ok()) return "read of vram failed: " + copied.message();
  }
  f.staged_bytes = need;
  // The frame holds the buffer until it is sent; then it goes back to the pool.
  f.staged = std::shared_ptr<std::uint8_t>(buf.data(), [pool = pinned_pool_, buf](std::uint8_t*) {
    std::lock_guard lock(pool->first);
    if (pool->second.size() < kPinnedPoolBuffers) pool->second.push_back(buf);
  });
  return {};
}

void TcpEngine::queue_read_reply(Stream& s, OutFrame f) {
  // Replies leave a stream in request order: once one waits, all later ones wait too.
  if (!s.deferred_reads.empty() ||
      (s.staged_queued >= kMaxStagedQueuedBytes && !vram_segments(f.segments).empty())) {
    s.deferred_reads.push_back(std::move(f));
    return;
  }
  stage_and_queue_reply(s, std::move(f));
}

void TcpEngine::release_deferred_reads(Stream& s) {
  while (!s.deferred_reads.empty() &&
         (s.staged_queued < kMaxStagedQueuedBytes || vram_segments(s.deferred_reads.front().segments).empty())) {
    OutFrame f = std::move(s.deferred_reads.front());
    s.deferred_reads.pop_front();
    stage_and_queue_reply(s, std::move(f));
  }
}

void TcpEngine::stage_and_queue_reply(Stream& s, OutFrame f) {
  if (std::string err = stage_read_from_vram(f); !err.empty()) {
    queue_frame(s, make_message_frame(FrameType::kReadData, f.h.req, std::move(err), kFlagError));
    return;
  }
  s.staged_queued += f.staged_bytes;
  queue_frame(s, std::move(f));
}

}  // namespace kvferry::detail::tcp
