// TpSender: a prefill rank answering decode ranks' asks with its heads of each request.
#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <deque>

#include "kv/tp/tp_direct_plan.h"
#include "kv/tp/tp_endpoint.h"
#include "kv/tp/tp_staging.h"
#include "kvferry/kv/kv_head_copy.h"
#include "kvferry/kv/tp_transfer.h"

namespace kvferry {

using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kMaxRequests = 4096;    // asks for requests not yet sent are kept up to this
constexpr std::size_t kMaxInFlight = 16;      // writes posted and not reaped, all requests

struct Piece {
  std::uint64_t first = 0;
  std::uint64_t tokens = 0;
};

// One decode rank's ask for one request.
struct Grant {
  tp::TpAsk ask;
  std::string peer;
  std::vector<std::uint32_t> destination_blocks;  // direct
  std::optional<KvPool> destination_pool;         // direct
  std::deque<Piece> todo;
  std::uint32_t in_flight = 0;
  std::uint64_t tokens_landed = 0;
};

struct SendRequest {
  std::vector<std::uint32_t> blocks;
  std::vector<Piece> chunks;
  bool sent_any = false;
  bool last_seen = false;
  std::uint64_t end_token = 0;  // of the last chunk once seen
  std::uint64_t tokens = 0;     // sum of chunks
  std::map<std::uint32_t, Grant> grants;  // by decode rank
  Status error;
};

struct InFlight {
  std::string request;
  std::uint32_t decode_rank = 0;
  Piece piece;
  StagingSlot slot;
  std::optional<TransferRequest> transfer;
};

}  // namespace

class TpSender::Impl {
 public:
  Impl(Agent& agent, KvPool pool, TpSenderOptions options, TpMapping mapping, std::uint64_t instance,
       std::unique_ptr<std::uint64_t[]> heartbeat)
      : agent_(agent),
        pool_(std::move(pool)),
        options_(std::move(options)),
        mapping_(std::move(mapping)),
        instance_(instance),
        heartbeat_(std::move(heartbeat)),
        arenas_(agent, options_.staging, pool_.kind(), pool_.device()) {
    for (const TpShare& share : mapping_.prefill_shares(options_.rank)) readers_.insert(share.decode_rank);
  }
  ~Impl() {
    in_flight_.clear();  // cancels what is still moving before the arenas deregister
    DescriptorList heartbeat(MemoryKind::kDram);
    heartbeat.add(make_descriptor(heartbeat_.get(), sizeof(std::uint64_t)));
    (void)agent_.deregister_memory(heartbeat);
  }

  // Made at create, so that the first request does not pay for pinning (or a GPU probe).
  Status make_arenas() {
    std::lock_guard lock(mutex_);
    KVF_RETURN_IF_ERROR(arenas_.arena(MemoryKind::kDram).status());
    if (pool_.kind() == MemoryKind::kVram) KVF_RETURN_IF_ERROR(arenas_.arena(MemoryKind::kVram).status());
    return Status::Ok();
  }

  Status send(std::string_view id, std::span<const std::uint32_t> blocks, std::uint64_t first, std::uint64_t tokens,
              bool last);
  Status progress();
  Status wait(std::string_view id, std::chrono::milliseconds timeout);
  std::vector<Notification> take_other_notifications() {
    std::lock_guard lock(mutex_);
    return others_.take();
  }

 private:
  void handle(const Notification& n);
  void handle_ask(const std::string& from, tp::TpAsk ask);
  Status accept_ask(const std::string& from, const tp::TpAsk& ask, Grant& grant);
  void refuse(const std::string& peer, const tp::TpAsk& ask, const Status& why);
  void add_pieces(Grant& grant, Piece chunk);
  Status pump();
  Status post_piece(const std::string& id, SendRequest& request, Grant& grant, bool* blocked);
  Status reap();
  std::optional<Status> finished(const SendRequest& request) const;
  std::string pending_text(const SendRequest& request) const;

  Agent& agent_;
  const KvPool pool_;
  const TpSenderOptions options_;
  const TpMapping mapping_;
  const std::uint64_t instance_;
  std::unique_ptr<std::uint64_t[]> heartbeat_;  // registered: receivers probe it
  std::set<std::uint32_t> readers_;              // decode ranks that read this rank
  mutable std::mutex mutex_;
  tp::StagingArenas arenas_;
  std::map<std::string, SendRequest, std::less<>> requests_;
  std::deque<InFlight> in_flight_;
  tp::OtherInbox others_;
  Status first_new_error_;
};

Status TpSender::Impl::send(std::string_view id, std::span<const std::uint32_t> blocks, std::uint64_t first,
                            std::uint64_t tokens, bool last) {
  if (id.empty() || id.size() > tp::kMaxRequestIdBytes) {
    return InvalidArgument("tp send: request id must be 1.." + std::to_string(tp::kMaxRequestIdBytes) + " bytes");
  }
  if (tokens == 0) return InvalidArgument("tp send: request '" + std::string(id) + "': a chunk of 0 tokens");
  const KvLayout& layout = pool_.layout();
  const std::uint64_t needed = layout.blocks_for_tokens(first + tokens);
  if (blocks.size() < needed) {
    return InvalidArgument("tp send: request '" + std::string(id) + "': tokens up to " + std::to_string(first + tokens) +
                           " need " + std::to_string(needed) + " blocks; the block table has " +
                           std::to_string(blocks.size()));
  }
  for (std::uint64_t i = 0; i < needed; ++i) {
    if (blocks[i] >= layout.blocks()) {
      return InvalidArgument("tp send: request '" + std::string(id) + "': block id " + std::to_string(blocks[i]) +
                             " outside the pool of " + std::to_string(layout.blocks()) + " blocks");
    }
  }
  {
    std::lock_guard lock(mutex_);
    auto it = requests_.find(id);
    if (it == requests_.end()) {
      if (requests_.size() >= kMaxRequests) return Unavailable("tp send: " + std::to_string(kMaxRequests) + " requests pending");
      it = requests_.emplace(std::string(id), SendRequest{}).first;
    }
    SendRequest& r = it->second;
    if (r.last_seen) return InvalidArgument("tp send: request '" + std::string(id) + "': a chunk after the last one");
    for (const Piece& c : r.chunks) {
      if (first < c.first + c.tokens && c.first < first + tokens) {
        return InvalidArgument("tp send: request '" + std::string(id) + "': tokens [" + std::to_string(first) + ", " +
                               std::to_string(first + tokens) + ") overlap an earlier chunk [" +
                               std::to_string(c.first) + ", " + std::to_string(c.first + c.tokens) + ")");
      }
    }
    r.blocks.assign(blocks.begin(), blocks.end());  // a later chunk's table extends the earlier one's
    r.chunks.push_back({first, tokens});
    r.sent_any = true;
    r.tokens += tokens;
    if (last) {
      r.last_seen = true;
      r.end_token = first + tokens;
    }
    for (auto& [rank, grant] : r.grants) add_pieces(grant, {first, tokens});
  }
  return progress();
}

void TpSender::Impl::add_pieces(Grant& grant, Piece chunk) {
  if (chunk.tokens == 0) return;
  const std::uint32_t heads = grant.ask.share.heads.count;
  const std::uint64_t per_token = tp::staging_token_bytes(pool_.layout(), heads);
  const bool device = grant.ask.path == TpPath::kDeviceStaging;
  std::uint64_t limit = device ? options_.device_piece_bytes : options_.piece_bytes;
  if (grant.ask.path != TpPath::kDirect) {
    limit = std::min(limit, arenas_.capacity(device ? MemoryKind::kVram : MemoryKind::kDram));
  }
  // Even pieces: 320 MiB under a 256 MiB limit is two of 160, not 256 and a small tail
  // that pays the whole per-piece cost for little data.
  const std::uint64_t most = std::max<std::uint64_t>(1, limit / per_token);
  const std::uint64_t count = (chunk.tokens + most - 1) / most;
  const std::uint64_t piece_tokens = std::max<std::uint64_t>(1, (chunk.tokens + count - 1) / count);
  for (std::uint64_t t = chunk.first; t < chunk.first + chunk.tokens; t += piece_tokens) {
    grant.todo.push_back({t, std::min(piece_tokens, chunk.first + chunk.tokens - t)});
  }
}

Status TpSender::Impl::progress() {
  std::lock_guard lock(mutex_);
  for (const Notification& n : agent_.take_notifications()) handle(n);
  Status reaped = reap();
  Status pumped = pump();
  Status first = std::move(first_new_error_);
  first_new_error_ = Status::Ok();
  if (!first.ok()) return first;
  return !reaped.ok() ? reaped : pumped;
}

void TpSender::Impl::handle(const Notification& n) {
  std::optional<Result<tp::TpMessage>> message = tp::decode_message(n.message);
  if (!message) {
    others_.keep(n);
    return;
  }
  if (!message->ok()) {
    if (first_new_error_.ok()) first_new_error_ = message->status().with_context("from peer '" + n.from + "'");
    return;
  }
  if ((*message)->kind == tp::TpMessage::Kind::kAsk) handle_ask(n.from, std::move((*message)->ask));
}

void TpSender::Impl::refuse(const std::string& peer, const tp::TpAsk& ask, const Status& why) {
  tp::TpRefusal refusal{ask.request, instance_, why.to_string()};
  (void)agent_.notify(peer, tp::as_string(tp::encode(refusal)));
}

void TpSender::Impl::handle_ask(const std::string& from, tp::TpAsk ask) {
  auto it = requests_.find(ask.request);
  if (it == requests_.end()) {
    if (requests_.size() >= kMaxRequests) {
      refuse(from, ask, Unavailable("prefill rank " + std::to_string(options_.rank) + " holds " +
                                    std::to_string(kMaxRequests) + " pending requests"));
      return;
    }
    it = requests_.emplace(ask.request, SendRequest{}).first;
  }
  SendRequest& request = it->second;
  Grant grant;
  Status accepted = accept_ask(from, ask, grant);
  if (accepted.ok() && request.grants.count(ask.decode_rank) != 0) {
    accepted = InvalidArgument("decode rank " + std::to_string(ask.decode_rank) + " asked twice for request '" +
                               ask.request + "'");
  }
  if (!accepted.ok()) {
    refuse(from, ask, accepted);
    if (!request.sent_any && request.grants.empty()) requests_.erase(it);
    return;
  }
  for (const Piece& chunk : request.chunks) add_pieces(grant, chunk);
  request.grants.emplace(ask.decode_rank, std::move(grant));
}

Status TpSender::Impl::accept_ask(const std::string& from, const tp::TpAsk& ask, Grant& grant) {
  const TpGroups& g = options_.groups;
  if (ask.groups.kv_heads != g.kv_heads || ask.groups.prefill_tp != g.prefill_tp ||
      ask.groups.decode_tp != g.decode_tp || ask.groups.mla != g.mla) {
    return FailedPrecondition("TP groups differ: the decode rank says " + std::to_string(ask.groups.kv_heads) +
                              " KV heads, P " + std::to_string(ask.groups.prefill_tp) + ", D " +
                              std::to_string(ask.groups.decode_tp) + "; this prefill rank " +
                              std::to_string(g.kv_heads) + ", " + std::to_string(g.prefill_tp) + ", " +
                              std::to_string(g.decode_tp));
  }
  const auto shares = mapping_.prefill_shares(options_.rank);
  const bool known = std::any_of(shares.begin(), shares.end(), [&](const TpShare& s) { return s == ask.share; });
  if (!known || ask.share.prefill_rank != options_.rank) {
    return InvalidArgument("asked for heads [" + std::to_string(ask.share.heads.first) + ", " +
                           std::to_string(ask.share.heads.end()) + ") for decode rank " +
                           std::to_string(ask.decode_rank) + ", which prefill rank " + std::to_string(options_.rank) +
                           " does not send under " + mapping_.describe());
  }
  // The ask names its sender's instance: it must be the decode agent we have loaded.
  KVF_ASSIGN_OR_RETURN(tp::EndpointInfo reader, tp::remote_endpoint(agent_, from));
  if (reader.role != tp::Role::kDecode || reader.rank != ask.decode_rank || reader.instance != ask.receiver_instance) {
    return FailedPrecondition("the ask does not match peer '" + from + "''s kv.tp entry (rank " +
                              std::to_string(reader.rank) + "): reload its metadata");
  }
  const std::uint64_t per_token = tp::staging_token_bytes(pool_.layout(), ask.decode_heads);
  if (ask.path == TpPath::kDirect) {
    KVF_ASSIGN_OR_RETURN(KvPool destination, remote_kv_pool(agent_, from));
    KVF_RETURN_IF_ERROR(tp::check_same_model(pool_.layout(), destination.layout(), "peer '" + from + "'"));
    grant.destination_blocks = tp::from_runs(ask.block_runs);
    if (grant.destination_blocks.size() < destination.layout().blocks_for_tokens(ask.tokens)) {
      return InvalidArgument("the ask's block table holds " + std::to_string(grant.destination_blocks.size()) +
                             " blocks, too few for " + std::to_string(ask.tokens) + " tokens");
    }
    grant.destination_pool = std::move(destination);
  } else {
    if (ask.slot_bytes / per_token < ask.tokens) {
      return InvalidArgument("the ask's staging slot of " + std::to_string(ask.slot_bytes) + " bytes cannot hold " +
                             std::to_string(ask.tokens) + " tokens of " + std::to_string(ask.decode_heads) + " heads");
    }
    if (ask.path == TpPath::kDeviceStaging && pool_.kind() != MemoryKind::kVram) {
      return InvalidArgument("device staging asked of a prefill rank whose pool is in host memory");
    }
  }
  if (ask.share.destination_head_offset + ask.share.heads.count > ask.decode_heads) {
    return InvalidArgument("the ask's destination heads exceed the decode rank's " + std::to_string(ask.decode_heads));
  }
  grant.ask = ask;
  grant.peer = from;
  return Status::Ok();
}

Status TpSender::Impl::pump() {
  for (auto& [id, request] : requests_) {
    if (!request.error.ok()) continue;
    for (auto& [rank, grant] : request.grants) {
      while (!grant.todo.empty() && in_flight_.size() < kMaxInFlight) {
        bool blocked = false;
        Status posted = post_piece(id, request, grant, &blocked);
        if (!posted.ok()) {
          request.error = posted;
          if (first_new_error_.ok()) first_new_error_ = posted;
          refuse(grant.peer, grant.ask, posted);  // the decode rank fails now, with our reason
          break;
        }
        if (blocked) break;  // no staging slot free: back-pressure until a write finishes
      }
    }
  }
  return Status::Ok();
}

Status TpSender::Impl::post_piece(const std::string& id, SendRequest& request, Grant& grant, bool* blocked) {
  const tp::TpAsk& ask = grant.ask;
  const Piece piece = grant.todo.front();
  const KvTokenWindow window{request.blocks, piece.first, piece.tokens};
  const HeadRange local_heads{ask.share.source_head_offset, ask.share.heads.count};
  if (piece.first + piece.tokens > ask.tokens) {
    return InvalidArgument("request '" + id + "': tokens up to " + std::to_string(piece.first + piece.tokens) +
                           " sent, but decode rank " + std::to_string(ask.decode_rank) + " expects " +
                           std::to_string(ask.tokens));
  }
  tp::TpLanded landed{id, options_.rank, instance_, piece.first, piece.tokens, ask.share.heads};
  TransferOptions transfer_options;
  transfer_options.notification = tp::as_string(tp::encode(landed));
  transfer_options.backend = options_.backend;
  InFlight flight{id, ask.decode_rank, piece, StagingSlot{}, std::nullopt};
  Result<TransferRequest> transfer = Internal("tp: no transfer built");
  if (ask.path == TpPath::kDirect) {
    tp::DescriptorPairs pairs(pool_.kind(), pool_.device(), grant.destination_pool->kind(),
                              grant.destination_pool->device());
    KVF_RETURN_IF_ERROR(tp::plan_head_slices({&pool_, request.blocks, local_heads.first},
                                             {&*grant.destination_pool, grant.destination_blocks,
                                              ask.share.destination_head_offset},
                                             local_heads.count, piece.first, piece.tokens,
                                             options_.naive_direct_plan ? tp::SlicePlan::kNaive : tp::SlicePlan::kMerged,
                                             pairs));
    transfer = agent_.create_transfer(TransferOp::kWrite, pairs.local(), grant.peer, pairs.remote(),
                                      std::move(transfer_options));
  } else {
    const MemoryKind kind = ask.path == TpPath::kDeviceStaging ? MemoryKind::kVram : MemoryKind::kDram;
    KVF_ASSIGN_OR_RETURN(StagingSlots * arena, arenas_.arena(kind));
    const KvStagingShape shape = KvStagingShape::of(pool_.layout(), local_heads.count, piece.tokens);
    Result<StagingSlot> slot = arena->try_acquire(shape.bytes());
    if (!slot.ok()) {
      if (slot.status().code() != StatusCode::kUnavailable || in_flight_.empty()) return slot.status();
      *blocked = true;
      return Status::Ok();
    }
    flight.slot = std::move(slot).value();
    const KvStaging staging{flight.slot.address(), shape.bytes(), flight.slot.kind(), flight.slot.device()};
    KVF_RETURN_IF_ERROR(tp::gather_to_host(arenas_, pool_, window, local_heads, staging)
                            .with_context("gathering request '" + id + "'"));
    // The share's place in the decode rank's staging: the piece's rows start at its first
    // token; inside them, heads outermost (kv_head_copy.h).
    const KvStagingShape remote_shape = KvStagingShape::of(pool_.layout(), ask.decode_heads, piece.tokens);
    const std::uint64_t offset = piece.first * tp::staging_token_bytes(pool_.layout(), ask.decode_heads) +
                                 remote_shape.head_offset(ask.share.destination_head_offset);
    DescriptorList local(staging.kind, {Descriptor{staging.address, shape.bytes(), staging.device}});
    DescriptorList remote(ask.slot_kind, {Descriptor{ask.slot_address + offset, shape.bytes(), ask.slot_device}});
    transfer = agent_.create_transfer(TransferOp::kWrite, local, grant.peer, remote, std::move(transfer_options));
  }
  if (!transfer.ok()) {
    return transfer.status().with_context("request '" + id + "' to decode rank " + std::to_string(ask.decode_rank) +
                                          " ('" + grant.peer + "')");
  }
  flight.transfer = std::move(transfer).value();
  KVF_RETURN_IF_ERROR(flight.transfer->post().with_context("posting request '" + id + "' to '" + grant.peer + "'"));
  grant.todo.pop_front();
  ++grant.in_flight;
  in_flight_.push_back(std::move(flight));
  return Status::Ok();
}

Status TpSender::Impl::reap() {
  Status first;
  for (auto it = in_flight_.begin(); it != in_flight_.end();) {
    const TransferState state = it->transfer->state();
    if (state == TransferState::kInProgress) {
      ++it;
      continue;
    }
    auto request = requests_.find(it->request);
    if (request != requests_.end()) {
      auto grant = request->second.grants.find(it->decode_rank);
      if (grant != request->second.grants.end()) {
        --grant->second.in_flight;
        if (state == TransferState::kDone) grant->second.tokens_landed += it->piece.tokens;
      }
      if (state == TransferState::kError && request->second.error.ok()) {
        request->second.error = it->transfer->error().with_context(
            "request '" + it->request + "': writing tokens [" + std::to_string(it->piece.first) + ", " +
            std::to_string(it->piece.first + it->piece.tokens) + ") to decode rank " + std::to_string(it->decode_rank));
        if (first.ok()) first = request->second.error;
      }
    }
    it = in_flight_.erase(it);  // returns the staging slot
  }
  return first;
}

std::optional<Status> TpSender::Impl::finished(const SendRequest& request) const {
  if (!request.error.ok()) {
    bool idle = true;
    for (const auto& [rank, grant] : request.grants) idle = idle && grant.in_flight == 0;
    if (idle) return request.error;
    return std::nullopt;
  }
  if (!request.last_seen || request.tokens != request.end_token) return std::nullopt;
  for (std::uint32_t reader : readers_) {
    auto grant = request.grants.find(reader);
    if (grant == request.grants.end() || grant->second.tokens_landed != request.tokens) return std::nullopt;
  }
  return Status::Ok();
}

std::string TpSender::Impl::pending_text(const SendRequest& request) const {
  std::string text;
  if (!request.last_seen) text += "the last chunk was not sent; ";
  for (std::uint32_t reader : readers_) {
    auto grant = request.grants.find(reader);
    if (grant == request.grants.end()) {
      text += "decode rank " + std::to_string(reader) + " never asked; ";
    } else if (grant->second.tokens_landed != request.tokens || !request.last_seen) {
      text += "decode rank " + std::to_string(reader) + " ('" + grant->second.peer + "'): " +
              std::to_string(grant->second.tokens_landed) + " of " + std::to_string(request.tokens) +
              " tokens landed; ";
    }
  }
  return text.empty() ? text : text.substr(0, text.size() - 2);
}

Status TpSender::Impl::wait(std::string_view id, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    (void)progress();  // errors are kept per request
    bool writing = false;
    {
      std::lock_guard lock(mutex_);
      writing = !in_flight_.empty();
      auto it = requests_.find(id);
      if (it == requests_.end()) return NotFound("tp send: no request '" + std::string(id) + "'");
      if (std::optional<Status> done = finished(it->second)) {
        requests_.erase(it);
        return *done;
      }
      if (Clock::now() >= deadline) {
        return Timeout("tp send: request '" + std::string(id) + "' not delivered: " + pending_text(it->second));
      }
    }
    // Asks arrive as notifications (they wake us); writes finish on their own, so while
    // some are in flight look again soon. No spinning: the backends need the cores.
    agent_.wait_for_notifications(writing ? std::chrono::microseconds(200) : std::chrono::microseconds(2000));
  }
}

Result<std::unique_ptr<TpSender>> TpSender::create(Agent& agent, const KvPool& pool, TpSenderOptions options) {
  const TpGroups& g = options.groups;
  KVF_ASSIGN_OR_RETURN(TpMapping mapping, TpMapping::create(g.kv_heads, g.prefill_tp, g.decode_tp, g.mla));
  if (options.rank >= g.prefill_tp) {
    return InvalidArgument("tp sender: rank " + std::to_string(options.rank) + " of prefill TP " +
                           std::to_string(g.prefill_tp));
  }
  KVF_RETURN_IF_ERROR(tp::check_pool_heads(pool.layout(), mapping.prefill_heads(options.rank), "prefill", options.rank));
  if (options.piece_bytes == 0 || options.device_piece_bytes == 0) {
    return InvalidArgument("tp sender: piece_bytes and device_piece_bytes must be positive");
  }
  auto heartbeat = std::make_unique<std::uint64_t[]>(1);
  DescriptorList heartbeat_region(MemoryKind::kDram);
  heartbeat_region.add(make_descriptor(heartbeat.get(), sizeof(std::uint64_t)));
  KVF_RETURN_IF_ERROR(agent.register_memory(heartbeat_region).with_context("tp sender: registering its heartbeat word"));
  const std::uint64_t instance = tp::new_instance_id();
  heartbeat[0] = instance;
  tp::EndpointInfo info{tp::Role::kPrefill, g, options.rank, instance, reinterpret_cast<std::uint64_t>(heartbeat.get())};
  Status published = tp::publish_endpoint(agent, info);
  if (published.ok()) published = publish_kv_pool(agent, pool);
  if (!published.ok()) {
    (void)agent.deregister_memory(heartbeat_region);
    return published;
  }
  auto impl = std::make_unique<Impl>(agent, pool, std::move(options), std::move(mapping), instance, std::move(heartbeat));
  KVF_RETURN_IF_ERROR(impl->make_arenas());
  return std::unique_ptr<TpSender>(new TpSender(std::move(impl)));
}

TpSender::TpSender(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TpSender::~TpSender() = default;

Status TpSender::send(std::string_view request, std::span<const std::uint32_t> block_table, std::uint64_t first_token,
                      std::uint64_t tokens, bool last) {
  return impl_->send(request, block_table, first_token, tokens, last);
}
Status TpSender::progress() { return impl_->progress(); }
Status TpSender::wait(std::string_view request, std::chrono::milliseconds timeout) {
  return impl_->wait(request, timeout);
}
std::vector<Notification> TpSender::take_other_notifications() { return impl_->take_other_notifications(); }

}  // namespace kvferry
