// TpReceiver: a decode rank asking its prefill ranks for their shares of each request,
// scattering what lands, counting senders by agent and watching that they live.
#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>

#include "kv/tp/tp_endpoint.h"
#include "kv/tp/tp_receiver_state.h"
#include "kv/tp/tp_staging.h"
#include "kvferry/kv/kv_head_copy.h"
#include "kvferry/kv/tp_transfer.h"

namespace kvferry {

using Clock = std::chrono::steady_clock;

namespace {

// One prefill rank this decode rank reads.
struct Source {
  std::string peer;
  tp::EndpointInfo info;
  KvPool pool;
  TpShare share;
  // Liveness: an 8-byte read of the sender's heartbeat word, posted again and again
  // while a request waits on the sender.
  std::optional<TransferRequest> probe;
  Clock::time_point probe_posted{};
  Status lost;
};

struct Expected {
  tp::ReceiveProgress progress;
  std::vector<std::uint32_t> blocks;
  std::uint64_t tokens = 0;
  TpPath path = TpPath::kAuto;
  StagingSlot slot;
  Clock::time_point start{};
  TpReceiveReport report;
  Status error;
  bool done = false;
};

}  // namespace

class TpReceiver::Impl {
 public:
  Impl(Agent& agent, KvPool pool, TpReceiverOptions options, TpMapping mapping, std::uint64_t instance)
      : agent_(agent),
        pool_(std::move(pool)),
        options_(options),
        mapping_(std::move(mapping)),
        instance_(instance),
        arenas_(agent, options_.staging, pool_.kind(), pool_.device()) {}
  ~Impl() {
    for (Source& s : sources_) s.probe.reset();
    expected_.clear();  // slots back before the arenas go
    quarantine_.clear();
    if (probe_words_) (void)agent_.deregister_memory(probe_region());
  }

  Status connect(const std::vector<std::string>& prefill_peers);
  // Senders write into our staging, so it must be registered before peers load our
  // metadata: made here, at create, not on first use.
  Status make_arenas() {
    std::lock_guard lock(mutex_);
    KVF_RETURN_IF_ERROR(arenas_.arena(MemoryKind::kDram).status());
    if (pool_.kind() == MemoryKind::kVram) KVF_RETURN_IF_ERROR(arenas_.arena(MemoryKind::kVram).status());
    return Status::Ok();
  }

  DescriptorList probe_region() const {
    DescriptorList region(MemoryKind::kDram);
    region.add(make_descriptor(probe_words_.get(), sizeof(std::uint64_t) * sources_.size()));
    return region;
  }

  Status expect(std::string_view id, std::span<const std::uint32_t> blocks, std::uint64_t tokens, TpPath path);
  Status progress();
  Status wait(std::string_view id, std::chrono::milliseconds timeout);
  TpReceiveReport last_report() const {
    std::lock_guard lock(mutex_);
    return last_report_;
  }
  std::vector<std::string> describe_sources() const;
  std::vector<Notification> take_other_notifications() {
    std::lock_guard lock(mutex_);
    return others_.take();
  }

 private:
  Source* source_named(const std::string& peer);
  Status refresh_source(Source& source);
  TpPath choose_path(std::uint64_t tokens, TpPath asked) const;
  void handle(const Notification& n);
  void on_landed(const std::string& from, const tp::TpLanded& landed);
  void fail(Expected& e, Status why);
  void watch_sources();
  std::string source_name(const Source& s) const {
    return "'" + s.peer + "' (prefill rank " + std::to_string(s.info.rank) + ", heads [" +
           std::to_string(s.share.heads.first) + ", " + std::to_string(s.share.heads.end()) + "))";
  }

  Agent& agent_;
  const KvPool pool_;
  const TpReceiverOptions options_;
  const TpMapping mapping_;
  const std::uint64_t instance_;
  mutable std::mutex mutex_;
  std::vector<Source> sources_;                  // the shares of this decode rank, in order
  std::unique_ptr<std::uint64_t[]> probe_words_; // one per source, registered
  tp::StagingArenas arenas_;
  std::map<std::string, Expected, std::less<>> expected_;
  tp::OtherInbox others_;
  TpReceiveReport last_report_;
  std::vector<std::pair<StagingSlot, Clock::time_point>> quarantine_;  // slots of failed requests
};

Source* TpReceiver::Impl::source_named(const std::string& peer) {
  for (Source& s : sources_) {
    if (s.peer == peer) return &s;
  }
  return nullptr;
}

Status TpReceiver::Impl::refresh_source(Source& source) {
  // A prefill agent loaded again (restarted) is a new instance: start afresh with it.
  Result<tp::EndpointInfo> info = tp::remote_endpoint(agent_, source.peer);
  if (!info.ok()) return info.status();
  if (info->instance != source.info.instance) {
    if (info->rank != source.info.rank) {
      return FailedPrecondition("peer '" + source.peer + "' is now prefill rank " + std::to_string(info->rank) +
                                ", was rank " + std::to_string(source.info.rank) + ": make a new receiver");
    }
    source.info = *info;
    source.probe.reset();
    source.lost = Status::Ok();
  }
  return source.lost;
}

TpPath TpReceiver::Impl::choose_path(std::uint64_t tokens, TpPath asked) const {
  const TpPath path = asked != TpPath::kAuto ? asked : options_.path;
  if (path != TpPath::kAuto) return path;
  const std::uint32_t heads = pool_.layout().geometry().kv_heads;
  // The sources' pools are alike (one model, one TP degree): the first one stands for all.
  const TpPathEstimate estimate = tp_path_estimate(sources_.front().pool.layout(), pool_.layout(), pool_.kind(),
                                                   tokens, heads, static_cast<std::uint32_t>(sources_.size()));
  return estimate.path;
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
  for (Source& s : sources_) KVF_RETURN_IF_ERROR(refresh_source(s).with_context("prefill " + source_name(s)));
  Expected e;
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
    const auto deadline = Clock::now() + options_.slot_timeout;
    while (true) {
      Result<StagingSlot> slot = arena->try_acquire(bytes);
      if (slot.ok()) {
        e.slot = std::move(slot).value();
        break;
      }
      if (slot.status().code() != StatusCode::kUnavailable || Clock::now() >= deadline) {
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
  for (const Source& s : sources_) {
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
  e.start = Clock::now();
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

void TpReceiver::Impl::fail(Expected& e, Status why) {
  if (e.done || !e.error.ok()) return;
  e.error = std::move(why);
  // Senders still alive may have writes into the slot in flight: it rests for twice the
  // peer timeout before another request may use it.
  if (e.slot.valid()) quarantine_.emplace_back(std::move(e.slot), Clock::now() + 2 * options_.peer_timeout);
}

void TpReceiver::Impl::handle(const Notification& n) {
  std::optional<Result<tp::TpMessage>> message = tp::decode_message(n.message);
  if (!message) {
    others_.keep(n);
    return;
  }
  if (!message->ok()) return;  // a malformed message names no request we could fail
  const tp::TpMessage& m = **message;
  if (m.kind == tp::TpMessage::Kind::kLanded) {
    on_landed(n.from, m.landed);
  } else if (m.kind == tp::TpMessage::Kind::kRefusal) {
    auto it = expected_.find(m.refusal.request);
    const Source* s = source_named(n.from);
    if (it != expected_.end() && s != nullptr && s->info.instance == m.refusal.sender_instance) {
      fail(it->second, RemoteError("prefill " + source_name(*s) + " refused request '" + m.refusal.request +
                                   "': " + m.refusal.reason));
    }
  }
}

void TpReceiver::Impl::on_landed(const std::string& from, const tp::TpLanded& landed) {
  auto it = expected_.find(landed.request);
  if (it == expected_.end()) return;  // a request already failed or forgotten
  Expected& e = it->second;
  if (e.done || !e.error.ok()) return;
  Result<tp::LandedShare> accepted = e.progress.land(from, landed, e.tokens);
  if (!accepted.ok()) {
    fail(e, accepted.status().with_context("request '" + landed.request + "'"));
    return;
  }
  const KvLayout& layout = pool_.layout();
  const std::uint32_t heads = layout.geometry().kv_heads;
  const std::uint64_t bytes = KvStagingShape::of(layout, accepted->heads.count, landed.tokens).bytes();
  if (e.path != TpPath::kDirect) {
    const KvStagingShape rows = KvStagingShape::of(layout, heads, landed.tokens);
    const std::uint64_t offset = landed.first_token * tp::staging_token_bytes(layout, heads) +
                                 rows.head_offset(accepted->destination_head_offset);
    const KvStaging staging{e.slot.address() + offset, bytes, e.slot.kind(), e.slot.device()};
    const KvTokenWindow window{e.blocks, landed.first_token, landed.tokens};
    const auto t0 = Clock::now();
    Status scattered =
        tp::scatter_from_host(arenas_, staging, pool_, window, {accepted->destination_head_offset, accepted->heads.count});
    e.report.scatter_ns += static_cast<std::uint64_t>(std::chrono::nanoseconds(Clock::now() - t0).count());
    if (!scattered.ok()) {
      fail(e, scattered.with_context("request '" + landed.request + "': scattering"));
      return;
    }
  }
  e.report.bytes += bytes;
  ++e.report.pieces;
  if (e.progress.complete(e.tokens)) {
    e.done = true;
    e.report.elapsed_ns = static_cast<std::uint64_t>(std::chrono::nanoseconds(Clock::now() - e.start).count());
    e.slot.release();
  }
}

void TpReceiver::Impl::watch_sources() {
  const auto interval = std::max(std::chrono::milliseconds(10), options_.peer_timeout / 4);
  const auto now = Clock::now();
  for (std::size_t i = 0; i < sources_.size(); ++i) {
    Source& s = sources_[i];
    bool waited_on = false;
    for (auto& [id, e] : expected_) {
      waited_on = waited_on || (!e.done && e.error.ok() && !e.progress.source_complete(s.peer, e.tokens));
    }
    if (!waited_on || !s.lost.ok()) continue;
    Status lost;
    if (s.probe && s.probe->state() == TransferState::kInProgress) {
      if (now - s.probe_posted > options_.peer_timeout) lost = PeerLost("no answer to a liveness probe");
    } else if (s.probe && s.probe->state() == TransferState::kError) {
      lost = s.probe->error();
    } else if (!s.probe || now - s.probe_posted >= interval) {
      if (!s.probe) {
        DescriptorList local(MemoryKind::kDram);
        local.add(make_descriptor(probe_words_.get() + i, sizeof(std::uint64_t)));
        DescriptorList remote(MemoryKind::kDram);
        remote.add(s.info.heartbeat_address, sizeof(std::uint64_t));
        Result<TransferRequest> probe = agent_.create_transfer(TransferOp::kRead, local, s.peer, remote);
        if (!probe.ok()) {
          lost = probe.status();
        } else {
          s.probe = std::move(probe).value();
        }
      }
      if (lost.ok()) {
        s.probe_posted = now;
        Status posted = s.probe->post();
        if (!posted.ok()) lost = posted;
      }
    }
    if (lost.ok()) continue;
    // A sender that finished and left: its last pieces may be in the inbox already.
    for (const Notification& n : agent_.take_notifications()) handle(n);
    bool still_waited_on = false;
    for (auto& [id, e] : expected_) {
      still_waited_on = still_waited_on || (!e.done && e.error.ok() && !e.progress.source_complete(s.peer, e.tokens));
    }
    if (!still_waited_on) {
      s.probe.reset();
      continue;
    }
    s.lost = PeerLost("prefill sender " + source_name(s) + " lost: " + lost.to_string());
    for (auto& [id, e] : expected_) {
      if (!e.done && !e.progress.source_complete(s.peer, e.tokens)) fail(e, s.lost.with_context("request '" + id + "'"));
    }
  }
}

Status TpReceiver::Impl::progress() {
  std::lock_guard lock(mutex_);
  for (const Notification& n : agent_.take_notifications()) handle(n);
  watch_sources();
  const auto now = Clock::now();
  std::erase_if(quarantine_, [&](const auto& q) { return q.second <= now; });
  return Status::Ok();
}

Status TpReceiver::Impl::wait(std::string_view id, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    (void)progress();
    {
      std::lock_guard lock(mutex_);
      auto it = expected_.find(id);
      if (it == expected_.end()) return NotFound("tp wait: no request '" + std::string(id) + "' expected");
      Expected& e = it->second;
      if (e.done || !e.error.ok()) {
        Status result = e.error;
        if (!result.ok()) e.report.elapsed_ns = static_cast<std::uint64_t>(std::chrono::nanoseconds(Clock::now() - e.start).count());
        last_report_ = e.report;
        expected_.erase(it);
        return result;
      }
      if (Clock::now() >= deadline) {
        return Timeout("tp wait: request '" + std::string(id) + "' incomplete; missing " +
                       e.progress.describe_missing(e.tokens));
      }
    }
    // Landed pieces arrive as notifications and wake us; probes are looked at this often.
    agent_.wait_for_notifications(std::chrono::milliseconds(5));
  }
}

std::vector<std::string> TpReceiver::Impl::describe_sources() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (const Source& s : sources_) out.push_back(source_name(s));
  return out;
}

Status TpReceiver::Impl::connect(const std::vector<std::string>& prefill_peers) {
  std::lock_guard lock(mutex_);
  if (!sources_.empty()) return FailedPrecondition("tp receiver: already connected to its prefill ranks");
  const TpGroups& g = options_.groups;
  const TpMapping& mapping = mapping_;
  // Which agent is which prefill rank: their own kv.tp entries say.
  std::vector<std::optional<std::pair<std::string, tp::EndpointInfo>>> by_rank(g.prefill_tp);
  for (const std::string& peer : prefill_peers) {
    KVF_ASSIGN_OR_RETURN(tp::EndpointInfo info, tp::remote_endpoint(agent_, peer));
    if (info.role != tp::Role::kPrefill) return InvalidArgument("tp receiver: peer '" + peer + "' is not a prefill rank");
    if (info.groups.kv_heads != g.kv_heads || info.groups.prefill_tp != g.prefill_tp ||
        info.groups.decode_tp != g.decode_tp || info.groups.mla != g.mla) {
      return FailedPrecondition("tp receiver: peer '" + peer + "' was set up for " + std::to_string(info.groups.kv_heads) +
                                " KV heads, prefill TP " + std::to_string(info.groups.prefill_tp) + ", decode TP " +
                                std::to_string(info.groups.decode_tp) + "; this decode rank for " +
                                std::to_string(g.kv_heads) + ", " + std::to_string(g.prefill_tp) + ", " +
                                std::to_string(g.decode_tp));
    }
    if (by_rank[info.rank]) {
      return InvalidArgument("tp receiver: peers '" + by_rank[info.rank]->first + "' and '" + peer +
                             "' both say they are prefill rank " + std::to_string(info.rank));
    }
    by_rank[info.rank] = std::make_pair(peer, info);
  }
  std::vector<Source> sources;
  for (const TpShare& share : mapping.decode_shares(options_.rank)) {
    if (!by_rank[share.prefill_rank]) {
      return InvalidArgument("tp receiver: no loaded peer is prefill rank " + std::to_string(share.prefill_rank) +
                             ", which decode rank " + std::to_string(options_.rank) + " reads");
    }
    const auto& [peer, info] = *by_rank[share.prefill_rank];
    KVF_ASSIGN_OR_RETURN(KvPool remote, remote_kv_pool(agent_, peer));
    KVF_RETURN_IF_ERROR(tp::check_same_model(pool_.layout(), remote.layout(), "prefill peer '" + peer + "'"));
    KVF_RETURN_IF_ERROR(tp::check_pool_heads(remote.layout(), mapping.prefill_heads(share.prefill_rank), "prefill",
                                             share.prefill_rank));
    sources.push_back(Source{peer, info, std::move(remote), share, std::nullopt, {}, Status::Ok()});
  }
  if (sources.empty()) return Internal("tp receiver: the mapping gives decode rank no share");
  auto probe_words = std::make_unique<std::uint64_t[]>(sources.size());
  DescriptorList region(MemoryKind::kDram);
  region.add(make_descriptor(probe_words.get(), sizeof(std::uint64_t) * sources.size()));
  KVF_RETURN_IF_ERROR(agent_.register_memory(region).with_context("tp receiver: registering its probe words"));
  sources_ = std::move(sources);
  probe_words_ = std::move(probe_words);
  return Status::Ok();
}

Result<std::unique_ptr<TpReceiver>> TpReceiver::create(Agent& agent, const KvPool& pool, TpReceiverOptions options) {
  const TpGroups& g = options.groups;
  KVF_ASSIGN_OR_RETURN(TpMapping mapping, TpMapping::create(g.kv_heads, g.prefill_tp, g.decode_tp, g.mla));
  if (options.rank >= g.decode_tp) {
    return InvalidArgument("tp receiver: rank " + std::to_string(options.rank) + " of decode TP " +
                           std::to_string(g.decode_tp));
  }
  KVF_RETURN_IF_ERROR(tp::check_pool_heads(pool.layout(), mapping.decode_heads(options.rank), "decode", options.rank));
  const std::uint64_t instance = tp::new_instance_id();
  Status published = tp::publish_endpoint(agent, {tp::Role::kDecode, g, options.rank, instance, 0});
  if (published.ok()) published = publish_kv_pool(agent, pool);
  if (!published.ok()) return published;
  auto impl = std::make_unique<Impl>(agent, pool, options, std::move(mapping), instance);
  KVF_RETURN_IF_ERROR(impl->make_arenas());
  return std::unique_ptr<TpReceiver>(new TpReceiver(std::move(impl)));
}

TpReceiver::TpReceiver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TpReceiver::~TpReceiver() = default;

Status TpReceiver::expect(std::string_view request, std::span<const std::uint32_t> block_table, std::uint64_t tokens,
                          TpPath path) {
  return impl_->expect(request, block_table, tokens, path);
}
Status TpReceiver::connect(const std::vector<std::string>& prefill_peers) { return impl_->connect(prefill_peers); }
Status TpReceiver::progress() { return impl_->progress(); }
Status TpReceiver::wait(std::string_view request, std::chrono::milliseconds timeout) {
  return impl_->wait(request, timeout);
}
TpReceiveReport TpReceiver::last_report() const { return impl_->last_report(); }
std::vector<std::string> TpReceiver::describe_sources() const { return impl_->describe_sources(); }
std::vector<Notification> TpReceiver::take_other_notifications() { return impl_->take_other_notifications(); }

}  // namespace kvferry
