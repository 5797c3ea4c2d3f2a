// TpReceiver::expect (tp_receiver_impl.h): the path of a request, its staging slot
// (back-pressure), the asks to the prefill ranks.
#include "kv/tp/tp_receiver_impl.h"

namespace kvferry {

TpPath TpReceiver::Impl::choose_path(std::uint64_t tokens, TpPath asked) const {
  const TpPath path = asked != TpPath::kAuto ? asked : options_.path;
  if (path != TpPath::kAuto) return path;
  const std::uint32_t heads = pool_.layout().geometry().kv_heads;
  // The sources' pools are alike (one model, one TP degree): the first one stands for all.
  // Their routes may differ: staging as soon as one sender's route makes direct dearer.
  TpPath chosen = TpPath::kDirect;
  for (const tp::Source& s : sources_) {
    const TpPathEstimate estimate =
        tp_path_estimate(sources_.front().pool.layout(), pool_.layout(), pool_.kind(), tokens, heads,
                         static_cast<std::uint32_t>(sources_.size()), s.route_backend);
    if (estimate.path != TpPath::kDirect) chosen = estimate.path;
  }
  return chosen;
}

Status TpReceiver::Impl::expect(std::string_view id, std::span<const std::uint32_t> blocks, std::uint64_t tokens,
                                TpPath asked) {
  if (id.empty() || id.size() > tp::kMaxRequestIdBytes) {
    return InvalidArgument("tp expect: request id must be 1.." + std::to_string(tp::kMaxRequestIdBytes) + " bytes");
  }
  const KvLayout& layout = pool_.layout();
  if (tokens == 0) return InvalidArgument("tp expect: request '" + std::string(id) + "' of 0 tokens");
  const std::uint64_t needed = layout.blocks_for_tokens(tokens);
  if (blocks.size() < needed) {
    return InvalidArgument("tp expect: request '" + std::string(id) + "': " + std::to_string(tokens) + " tokens need " +
                           std::to_string(needed) + " blocks; the block table has " + std::to_string(blocks.size()));
  }
  for (std::uint64_t i = 0; i < needed; ++i) {
    if (blocks[i] >= layout.blocks()) {
      return InvalidArgument("tp expect: request '" + std::string(id) + "': block id " + std::to_string(blocks[i]) +
                             " outside the pool of " + std::to_string(layout.blocks()) + " blocks");
    }
  }
  std::unique_lock lock(mutex_);
  if (sources_.empty()) return FailedPrecondition("tp expect: connect() the receiver to its prefill ranks first");
  if (expected_.count(id) != 0) return AlreadyExists("tp expect: request '" + std::string(id) + "' already expected");
  for (tp::Source& s : sources_) KVF_RETURN_IF_ERROR(refresh_source(s).with_context("prefill " + source_name(s)));
  tp::Expected e;
  e.tokens = tokens;
  e.blocks.assign(blocks.begin(), blocks.begin() + static_cast<std::ptrdiff_t>(needed));
  e.path = choose_path(tokens, asked);
  e.report.path = e.path;
  e.report.sources = static_cast<std::uint32_t>(sources_.size());
  const std::uint32_t heads = layout.geometry().kv_heads;
  if (e.path != TpPath::kDirect) {
    const MemoryKind kind = e.path == TpPath::kDeviceStaging ? MemoryKind::kVram : MemoryKind::kDram;
    const std::uint64_t bytes = tokens * tp::staging_token_bytes(layout, heads);
    if (bytes > arenas_.capacity(kind)) {
      return InvalidArgument("tp expect: request '" + std::string(id) + "' needs " + std::to_string(bytes) +
                             " bytes of " + std::string(to_string(kind)) + " staging; the arena holds " +
                             std::to_string(arenas_.capacity(kind)) + " (raise TpReceiverOptions::staging)");
    }
    KVF_ASSIGN_OR_RETURN(StagingSlots * arena, arenas_.arena(kind));
    // Back-pressure: wait for a slot while earlier requests complete (their progress
    // needs the lock, so it is not held while waiting).
    const auto deadline = tp::Clock::now() + options_.slot_timeout;
    while (true) {
      Result<StagingSlot> slot = arena->try_acquire(bytes);
      if (slot.ok()) {
        e.slot = std::move(slot).value();
        break;
      }
      if (slot.status().code() != StatusCode::kUnavailable || tp::Clock::now() >= deadline) {
        return Timeout("tp expect: request '" + std::string(id) + "': no staging slot of " + std::to_string(bytes) +
                       " bytes came free within " + std::to_string(options_.slot_timeout.count()) + " ms (" +
                       slot.status().message() + ")");
      }
      lock.unlock();
      (void)progress();
      agent_.wait_for_notifications(std::chrono::milliseconds(5));
      lock.lock();
      if (expected_.count(id) != 0) return AlreadyExists("tp expect: request '" + std::string(id) + "' already expected");
    }
  }
  std::vector<std::pair<std::string, tp::TpAsk>> asks;
  for (const tp::Source& s : sources_) {
    tp::TpAsk ask;
    ask.request = std::string(id);
    ask.path = e.path;
    ask.decode_rank = options_.rank;
    ask.receiver_instance = instance_;
    ask.groups = options_.groups;
    ask.tokens = tokens;
    ask.share = s.share;
    ask.decode_heads = heads;
    if (e.slot.valid()) {
      ask.slot_address = e.slot.address();
      ask.slot_bytes = e.slot.size();
      ask.slot_kind = e.slot.kind();
      ask.slot_device = e.slot.device();
    } else {
      ask.block_runs = tp::to_runs(e.blocks);
    }
    e.progress.add_source(s.peer, s.info.instance, s.share);
    asks.emplace_back(s.peer, std::move(ask));
  }
  e.start = tp::Clock::now();
  auto& stored = expected_.emplace(std::string(id), std::move(e)).first->second;
  for (auto& [peer, ask] : asks) {
    Status sent = agent_.notify(peer, tp::as_string(tp::encode(ask)));
    if (!sent.ok()) {
      expected_.erase(std::string(id));
      return sent.with_context("tp expect: asking '" + peer + "' for request '" + std::string(id) + "'");
    }
  }
  (void)stored;
  return Status::Ok();
}

}  // namespace kvferry
