// TpSender: a prefill rank answering decode ranks' asks with its heads of each request.
// This file takes the asks (on a listener thread, as they arrive), turns chunks into
// pieces and waits for requests; the piece pump (tp_piece_pump.h) moves the pieces.
#include <algorithm>
#include <chrono>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "kv/tp/tp_endpoint.h"
#include "kv/tp/tp_piece_pump.h"
#include "kv/tp/tp_send_book.h"
#include "kv/tp/tp_staging.h"
#include "kvferry/kv/kv_head_copy.h"
#include "kvferry/kv/tp_transfer.h"

namespace kvferry {

using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kMaxRequests = 4096;  // asks for requests not yet sent are kept up to this
// The listener and wait() sleep until woken (a notification, a piece landed); this only
// bounds a sleep in case a wake-up is missed.
constexpr std::chrono::milliseconds kNap{100};

struct Refusal {
  std::string peer;
  tp::TpAsk ask;
  Status why;
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
        arenas_(agent, options_.staging, pool_.kind(), pool_.device()),
        pump_(agent, pool_, options_, instance, arenas_, book_) {
    for (const TpShare& share : mapping_.prefill_shares(options_.rank)) readers_.insert(share.decode_rank);
  }
  ~Impl() {
    pump_.stop();  // sets book_.stopping; cancels what is still moving before the arenas deregister
    if (listener_.joinable()) listener_.join();
    DescriptorList heartbeat(MemoryKind::kDram);
    heartbeat.add(make_descriptor(heartbeat_.get(), sizeof(std::uint64_t)));
    (void)agent_.deregister_memory(heartbeat);
  }

  // The arenas are made at create, so that the first request does not pay for pinning
  // (or a GPU probe); then the pump's lanes and the listener start.
  Status start() {
    {
      std::lock_guard lock(book_.mutex);
      KVF_RETURN_IF_ERROR(arenas_.arena(MemoryKind::kDram).status());
      if (pool_.kind() == MemoryKind::kVram) KVF_RETURN_IF_ERROR(arenas_.arena(MemoryKind::kVram).status());
    }
    KVF_RETURN_IF_ERROR(pump_.start(readers_));
    listener_ = std::thread([this] { listen(); });
    return Status::Ok();
  }

  Status send(std::string_view id, std::span<const std::uint32_t> blocks, std::uint64_t first, std::uint64_t tokens,
              bool last);
  Status progress();
  Status wait(std::string_view id, std::chrono::milliseconds timeout);
  std::vector<Notification> take_other_notifications() {
    std::lock_guard lock(book_.mutex);
    return others_.take();
  }

 private:
  void listen();
  void take_notifications();
  void handle(const Notification& n, std::vector<Refusal>& refusals);
  void handle_ask(const std::string& from, tp::TpAsk ask, std::vector<Refusal>& refusals);
  Status accept_ask(const std::string& from, const tp::TpAsk& ask, tp::Grant& grant);
  Status prepare_lanes(const std::string& from, const tp::TpAsk& ask, tp::Grant& grant);
  void add_pieces(tp::Grant& grant, tp::Piece chunk);
  std::optional<Status> finished(const tp::SendRequest& request) const;
  std::string pending_text(const tp::SendRequest& request) const;
  tp::SendRequest& new_request(std::string id) {
    tp::SendRequest& r = book_.requests.emplace(std::move(id), tp::SendRequest{}).first->second;
    r.order = book_.next_order++;
    return r;
  }

  Agent& agent_;
  const KvPool pool_;
  const TpSenderOptions options_;
  const TpMapping mapping_;
  const std::uint64_t instance_;
  std::unique_ptr<std::uint64_t[]> heartbeat_;  // registered: receivers probe it
  std::set<std::uint32_t> readers_;              // decode ranks that read this rank
  tp::StagingArenas arenas_;                     // made under book_.mutex, then only looked up
  tp::SendBook book_;
  tp::OtherInbox others_;  // guarded by book_.mutex
  tp::PiecePump pump_;     // after what it uses: stopped and destroyed first
  std::thread listener_;
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
    std::lock_guard lock(book_.mutex);
    auto it = book_.requests.find(id);
    if (it == book_.requests.end() && book_.requests.size() >= kMaxRequests) {
      return Unavailable("tp send: " + std::to_string(kMaxRequests) + " requests pending");
    }
    tp::SendRequest& r = it != book_.requests.end() ? it->second : new_request(std::string(id));
    if (r.last_seen) return InvalidArgument("tp send: request '" + std::string(id) + "': a chunk after the last one");
    for (const tp::Piece& c : r.chunks) {
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
  book_.changed.notify_all();
  return progress();
}

void TpSender::Impl::add_pieces(tp::Grant& grant, tp::Piece chunk) {
  if (chunk.tokens == 0) return;
  const std::uint64_t per_token = tp::staging_token_bytes(pool_.layout(), grant.ask.share.heads.count);
  // Even pieces: 320 MiB under a 256 MiB limit is two of 160, not 256 and a small tail
  // that pays the whole per-piece cost for little data.
  // Block-unit lanes move whole blocks: pieces start and end on block boundaries, and a
  // chunk's partial blocks at either end go as pieces of their own (explicit plan).
  const std::uint64_t align = grant.lanes ? tp::unit_tokens(grant.lanes->unit, pool_.layout()) : 1;
  std::uint64_t first = chunk.first;
  std::uint64_t end = chunk.first + chunk.tokens;
  const std::uint64_t aligned_first = std::min(end, (first + align - 1) / align * align);
  const std::uint64_t aligned_end = std::max(aligned_first, end / align * align);
  if (aligned_first > first) grant.todo.push_back({first, aligned_first - first});
  first = aligned_first;
  const std::uint64_t tokens = aligned_end - first;
  if (tokens > 0) {
    const std::uint64_t most = std::max<std::uint64_t>(align, pump_.piece_limit(grant) / per_token / align * align);
    const std::uint64_t count = (tokens + most - 1) / most;
    const std::uint64_t piece_tokens = (tokens / align + count - 1) / count * align;
    for (std::uint64_t t = first; t < aligned_end; t += piece_tokens) {
      grant.todo.push_back({t, std::min(piece_tokens, aligned_end - t)});
    }
  }
  if (aligned_end < end) grant.todo.push_back({aligned_end, end - aligned_end});
}

Status TpSender::Impl::prepare_lanes(const std::string& from, const tp::TpAsk& ask, tp::Grant& grant) {
  const KvPool& destination = *grant.destination_pool;
  const tp::LaneUnit unit = options_.naive_direct_plan ? tp::LaneUnit::kNone : tp::head_lane_unit(pool_, destination);
  if (unit == tp::LaneUnit::kNone) return Status::Ok();
  const std::uint32_t heads = ask.share.heads.count;
  tp::DirectLanes lanes;
  lanes.unit = unit;
  KVF_ASSIGN_OR_RETURN(lanes.local,
                       agent_.prepare_local_lanes(tp::head_lanes(pool_, unit, ask.share.source_head_offset, heads)));
  KVF_ASSIGN_OR_RETURN(lanes.remote, agent_.prepare_remote_lanes(
                                         from, tp::head_lanes(destination, unit, ask.share.destination_head_offset, heads)));
  grant.lanes = std::move(lanes);
  return Status::Ok();
}

void TpSender::Impl::listen() {
  while (true) {
    agent_.wait_for_notifications(kNap);
    {
      std::lock_guard lock(book_.mutex);
      if (book_.stopping) return;
    }
    take_notifications();
  }
}

void TpSender::Impl::take_notifications() {
  std::vector<Notification> in = agent_.take_notifications();
  if (in.empty()) return;
  std::vector<Refusal> refusals;
  {
    std::lock_guard lock(book_.mutex);
    for (const Notification& n : in) handle(n, refusals);
  }
  book_.changed.notify_all();
  for (const Refusal& r : refusals) tp::refuse(agent_, instance_, r.peer, r.ask, r.why);
}

Status TpSender::Impl::progress() {
  take_notifications();  // the listener does it too; a caller driving progress gets it now
  std::lock_guard lock(book_.mutex);
  Status first = std::move(book_.first_new_error);
  book_.first_new_error = Status::Ok();
  return first;
}

void TpSender::Impl::handle(const Notification& n, std::vector<Refusal>& refusals) {
  std::optional<Result<tp::TpMessage>> message = tp::decode_message(n.message);
  if (!message) {
    others_.keep(n);
    return;
  }
  if (!message->ok()) {
    if (book_.first_new_error.ok()) book_.first_new_error = message->status().with_context("from peer '" + n.from + "'");
    return;
  }
  if ((*message)->kind == tp::TpMessage::Kind::kAsk) handle_ask(n.from, std::move((*message)->ask), refusals);
}

void TpSender::Impl::handle_ask(const std::string& from, tp::TpAsk ask, std::vector<Refusal>& refusals) {
  auto it = book_.requests.find(ask.request);
  if (it == book_.requests.end() && book_.requests.size() >= kMaxRequests) {
    refusals.push_back({from, ask, Unavailable("prefill rank " + std::to_string(options_.rank) + " holds " +
                                               std::to_string(kMaxRequests) + " pending requests")});
    return;
  }
  const bool fresh = it == book_.requests.end();
  tp::SendRequest& request = fresh ? new_request(ask.request) : it->second;
  tp::Grant grant;
  Status accepted = accept_ask(from, ask, grant);
  if (accepted.ok() && request.grants.count(ask.decode_rank) != 0) {
    accepted = InvalidArgument("decode rank " + std::to_string(ask.decode_rank) + " asked twice for request '" +
                               ask.request + "'");
  }
  if (!accepted.ok()) {
    if (!request.sent_any && request.grants.empty()) book_.requests.erase(ask.request);
    refusals.push_back({from, std::move(ask), accepted});
    return;
  }
  for (const tp::Piece& chunk : request.chunks) add_pieces(grant, chunk);
  request.grants.emplace(ask.decode_rank, std::move(grant));
}

Status TpSender::Impl::accept_ask(const std::string& from, const tp::TpAsk& ask, tp::Grant& grant) {
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
    KVF_RETURN_IF_ERROR(prepare_lanes(from, ask, grant));
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

std::optional<Status> TpSender::Impl::finished(const tp::SendRequest& request) const {
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

std::string TpSender::Impl::pending_text(const tp::SendRequest& request) const {
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
  take_notifications();
  // Asks are taken by the listener and pieces moved by the pump as they come; both signal
  // book_.changed, so this only sleeps until something happened.
  std::unique_lock lock(book_.mutex);
  while (true) {
    auto it = book_.requests.find(id);
    if (it == book_.requests.end()) return NotFound("tp send: no request '" + std::string(id) + "'");
    if (std::optional<Status> done = finished(it->second)) {
      book_.requests.erase(it);
      return *done;
    }
    const auto now = Clock::now();
    if (now >= deadline) {
      return Timeout("tp send: request '" + std::string(id) + "' not delivered: " + pending_text(it->second));
    }
    book_.changed.wait_until(lock, std::min(deadline, now + kNap));
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
  KVF_RETURN_IF_ERROR(impl->start());
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
