// The piece pump of a TpSender (tp_piece_pump.h): lane threads gather and post, a reaper
// thread counts what landed.
#include "kv/tp/tp_piece_pump.h"

#include <algorithm>
#include <chrono>

#include "kv/tp/tp_direct_plan.h"
#include "kv/tp/tp_endpoint.h"
#include "kvferry/kv/kv_head_copy.h"

namespace kvferry::tp {
namespace {

// Pieces taken and not reaped, all lanes and one lane. A staged piece holds a staging
// slot until its write completes, so few are in flight. A direct piece holds no slot, and
// its completion comes only after the decode rank has taken its notification: on busy
// cores that round trip (two processes' threads woken in turn) takes milliseconds, and
// with 4 in flight a lane sat idle waiting for it between every 4 pieces. Direct lanes
// therefore keep a whole prompt's pieces posted (the backend copies them in order).
constexpr std::uint32_t kMaxInFlight = 16;
constexpr std::uint32_t kLaneDepth = 4;
constexpr std::uint32_t kDirectMaxInFlight = 256;
constexpr std::uint32_t kDirectLaneDepth = 64;
// Lanes and the reaper sleep on a condition variable / the completion queue and are woken
// by the events they wait for; these bounds only cap a sleep in case a wake-up is missed.
constexpr std::chrono::milliseconds kLaneNap{100};
constexpr std::chrono::milliseconds kReaperNap{50};

}  // namespace

void refuse(Agent& agent, std::uint64_t instance, const std::string& peer, const TpAsk& ask, const Status& why) {
  TpRefusal refusal{ask.request, instance, why.to_string()};
  (void)agent.notify(peer, as_string(encode(refusal)));
}

std::uint64_t PiecePump::piece_limit(const Grant& grant) const {
  const bool device = grant.ask.path == TpPath::kDeviceStaging;
  std::uint64_t limit = device ? options_.device_piece_bytes : options_.piece_bytes;
  if (grant.ask.path != TpPath::kDirect) {
    limit = std::min(limit, arenas_.capacity(device ? MemoryKind::kVram : MemoryKind::kDram));
  }
  return limit;
}

Status PiecePump::start(const std::set<std::uint32_t>& readers) {
  KVF_ASSIGN_OR_RETURN(CompletionQueue queue, CompletionQueue::create());
  queue_.emplace(std::move(queue));
  reaper_ = std::thread([this] { reap(); });
  for (std::uint32_t rank : readers) lanes_.emplace_back([this, rank] { lane(rank); });
  return Status::Ok();
}

void PiecePump::stop() {
  {
    std::lock_guard lock(book_.mutex);
    book_.stopping = true;
  }
  book_.changed.notify_all();
  for (std::thread& t : lanes_) t.join();
  lanes_.clear();
  // Cancel what still moves (destroying a request in progress cancels it) before the
  // staging slots go back, outside the lock (a cancel waits for the backend to quiesce).
  std::map<std::uint64_t, InFlight> flights;
  {
    std::lock_guard lock(book_.mutex);
    flights.swap(in_flight_);
    reaper_stop_ = true;
  }
  for (auto& [tag, flight] : flights) flight.transfer.reset();
  flights.clear();
  if (reaper_.joinable()) reaper_.join();
}

PiecePump::Take PiecePump::take(std::uint32_t decode_rank, Job& job, Status& failure, SendRequest** failed) {
  if (busy_ >= kDirectMaxInFlight || lane_depth_[decode_rank] >= kDirectLaneDepth) return Take::kIdle;
  SendRequest* best = nullptr;
  std::string best_id;
  for (auto& [id, request] : book_.requests) {
    if (!request.error.ok() || (best && request.order > best->order)) continue;
    auto grant = request.grants.find(decode_rank);
    if (grant == request.grants.end() || grant->second.todo.empty()) continue;
    best = &request;
    best_id = id;
  }
  if (!best) return Take::kIdle;
  Grant& grant = best->grants.at(decode_rank);
  const TpAsk& ask = grant.ask;
  const Piece piece = grant.todo.front();
  if (ask.path != TpPath::kDirect && (busy_ >= kMaxInFlight || lane_depth_[decode_rank] >= kLaneDepth)) {
    return Take::kIdle;
  }
  if (piece.first + piece.tokens > ask.tokens) {
    failure = InvalidArgument("request '" + best_id + "': tokens up to " + std::to_string(piece.first + piece.tokens) +
                              " sent, but decode rank " + std::to_string(ask.decode_rank) + " expects " +
                              std::to_string(ask.tokens));
    *failed = best;
    return Take::kFailed;
  }
  if (ask.path != TpPath::kDirect) {
    const MemoryKind kind = ask.path == TpPath::kDeviceStaging ? MemoryKind::kVram : MemoryKind::kDram;
    Result<StagingSlots*> arena = arenas_.arena(kind);
    Result<StagingSlot> slot = arena.ok()
        ? (*arena)->try_acquire(KvStagingShape::of(pool_.layout(), ask.share.heads.count, piece.tokens).bytes())
        : Result<StagingSlot>(arena.status());
    if (!slot.ok()) {
      // No slot free now: a write in flight returns one and wakes us (back-pressure).
      // With none in flight, none ever comes free.
      if (slot.status().code() == StatusCode::kUnavailable && busy_ > 0) return Take::kIdle;
      failure = slot.status().with_context("request '" + best_id + "': staging for decode rank " +
                                           std::to_string(decode_rank));
      *failed = best;
      return Take::kFailed;
    }
    job.slot = std::move(slot).value();
  }
  grant.todo.pop_front();
  ++grant.in_flight;
  ++busy_;
  ++lane_depth_[decode_rank];
  job.request = best_id;
  job.decode_rank = decode_rank;
  job.piece = piece;
  job.blocks = best->blocks;
  job.grant = &grant;
  return Take::kJob;
}

Result<TransferRequest> PiecePump::build(Job& job, std::uint64_t tag) {
  const Grant& grant = *job.grant;
  const TpAsk& ask = grant.ask;
  const HeadRange local_heads{ask.share.source_head_offset, ask.share.heads.count};
  TransferOptions transfer_options;
  transfer_options.notification =
      as_string(encode(TpLanded{job.request, options_.rank, instance_, job.piece.first, job.piece.tokens, ask.share.heads}));
  transfer_options.backend = options_.backend;
  transfer_options.tag = tag;
  if (ask.path == TpPath::kDirect && grant.lanes &&
      lanes_cover(grant.lanes->unit, pool_.layout(), job.piece.first, job.piece.tokens)) {
    // The strided form (tp_head_lanes.h): unit ids on both sides, O(lanes + units).
    std::vector<std::uint32_t> local_units, remote_units;
    unit_ids(grant.lanes->unit, pool_.layout(), job.blocks, job.piece.first, job.piece.tokens, local_units);
    unit_ids(grant.lanes->unit, grant.destination_pool->layout(), grant.destination_blocks, job.piece.first,
             job.piece.tokens, remote_units);
    sort_by_local(local_units, remote_units);
    const LaneTransfer lanes{local_units, remote_units};
    return agent_.create_transfer(TransferOp::kWrite, grant.lanes->local, grant.lanes->remote, lanes,
                                  std::move(transfer_options));
  }
  if (ask.path == TpPath::kDirect) {
    DescriptorPairs pairs(pool_.kind(), pool_.device(), grant.destination_pool->kind(), grant.destination_pool->device());
    KVF_RETURN_IF_ERROR(plan_head_slices({&pool_, job.blocks, local_heads.first},
                                         {&*grant.destination_pool, grant.destination_blocks,
                                          ask.share.destination_head_offset},
                                         local_heads.count, job.piece.first, job.piece.tokens,
                                         options_.naive_direct_plan ? SlicePlan::kNaive : SlicePlan::kMerged, pairs));
    return agent_.create_transfer(TransferOp::kWrite, pairs.local(), grant.peer, pairs.remote(),
                                  std::move(transfer_options));
  }
  const KvStagingShape shape = KvStagingShape::of(pool_.layout(), local_heads.count, job.piece.tokens);
  const KvStaging staging{job.slot.address(), shape.bytes(), job.slot.kind(), job.slot.device()};
  const KvTokenWindow window{job.blocks, job.piece.first, job.piece.tokens};
  KVF_RETURN_IF_ERROR(gather_to_host(arenas_, pool_, window, local_heads, staging)
                          .with_context("gathering request '" + job.request + "'"));
  // The share's place in the decode rank's staging: the piece's rows start at its first
  // token; inside them, heads outermost (kv_head_copy.h).
  const KvStagingShape remote_shape = KvStagingShape::of(pool_.layout(), ask.decode_heads, job.piece.tokens);
  const std::uint64_t offset = job.piece.first * staging_token_bytes(pool_.layout(), ask.decode_heads) +
                               remote_shape.head_offset(ask.share.destination_head_offset);
  DescriptorList local(staging.kind, {Descriptor{staging.address, shape.bytes(), staging.device}});
  DescriptorList remote(ask.slot_kind, {Descriptor{ask.slot_address + offset, shape.bytes(), ask.slot_device}});
  return agent_.create_transfer(TransferOp::kWrite, local, grant.peer, remote, std::move(transfer_options));
}

void PiecePump::lane(std::uint32_t decode_rank) {
  std::unique_lock lock(book_.mutex);
  while (!book_.stopping) {
    Job job;
    Status failure;
    SendRequest* failed = nullptr;
    const Take took = take(decode_rank, job, failure, &failed);
    if (took == Take::kIdle) {
      book_.changed.wait_for(lock, kLaneNap);
      continue;
    }
    if (took == Take::kFailed) {
      // The decode rank fails now, with our reason (its pieces stop here).
      book_.fail(*failed, failure);
      const Grant& grant = failed->grants.at(decode_rank);
      const std::string peer = grant.peer;
      const TpAsk ask = grant.ask;
      lock.unlock();
      book_.changed.notify_all();
      refuse(agent_, instance_, peer, ask, failure);
      lock.lock();
      continue;
    }
    const std::uint64_t tag = next_tag_++;
    lock.unlock();
    Result<TransferRequest> transfer = build(job, tag);
    lock.lock();
    if (!transfer.ok()) {
      const Status why = transfer.status().with_context("request '" + job.request + "' to decode rank " +
                                                        std::to_string(decode_rank) + " ('" + job.grant->peer + "')");
      SendRequest& request = book_.requests.find(job.request)->second;  // kept: our piece is counted in it
      Grant& grant = request.grants.at(decode_rank);
      --grant.in_flight;
      --busy_;
      --lane_depth_[decode_rank];
      book_.fail(request, why);
      const std::string peer = grant.peer;
      const TpAsk ask = grant.ask;
      job.slot.release();
      lock.unlock();
      book_.changed.notify_all();
      refuse(agent_, instance_, peer, ask, why);
      lock.lock();
      continue;
    }
    InFlight& flight = in_flight_[tag];
    flight.request = job.request;
    flight.decode_rank = decode_rank;
    flight.piece = job.piece;
    flight.slot = std::move(job.slot);
    flight.transfer = std::move(transfer).value();
    // Its end, an error return included, comes to the reaper as exactly one completion.
    (void)flight.transfer->post(*queue_);
  }
}

void PiecePump::reap() {
  while (true) {
    queue_->wait(kReaperNap);
    std::vector<Completion> done = queue_->drain();
    std::unique_lock lock(book_.mutex);
    for (const Completion& c : done) {
      auto it = in_flight_.find(c.tag);
      if (it == in_flight_.end()) continue;  // cancelled by stop()
      InFlight& flight = it->second;
      --busy_;
      --lane_depth_[flight.decode_rank];
      auto request = book_.requests.find(flight.request);
      if (request != book_.requests.end()) {
        auto grant = request->second.grants.find(flight.decode_rank);
        if (grant != request->second.grants.end()) {
          --grant->second.in_flight;
          if (c.status.ok()) grant->second.tokens_landed += flight.piece.tokens;
        }
        if (!c.status.ok()) {
          book_.fail(request->second,
                     c.status.with_context("request '" + flight.request + "': writing tokens [" +
                                           std::to_string(flight.piece.first) + ", " +
                                           std::to_string(flight.piece.first + flight.piece.tokens) +
                                           ") to decode rank " + std::to_string(flight.decode_rank)));
        }
      }
      in_flight_.erase(it);  // the staging slot goes back
    }
    const bool leave = reaper_stop_ && in_flight_.empty();
    lock.unlock();
    if (!done.empty()) book_.changed.notify_all();
    if (leave) return;
  }
}

}  // namespace kvferry::tp
