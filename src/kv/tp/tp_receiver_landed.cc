// TpReceiver: what arrives (tp_receiver_impl.h): a landed piece counted for its sender
// and scattered into the pool, a refusal, a request failed.
#include "kv/tp/tp_receiver_impl.h"

#include "kvferry/kv/kv_head_copy.h"

namespace kvferry {

void TpReceiver::Impl::fail(tp::Expected& e, Status why) {
  if (e.done || !e.error.ok()) return;
  e.error = std::move(why);
  // Senders still alive may have writes into the slot in flight: it rests for twice the
  // peer timeout before another request may use it.
  if (e.slot.valid()) quarantine_.emplace_back(std::move(e.slot), tp::Clock::now() + 2 * options_.peer_timeout);
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
    const tp::Source* s = source_named(n.from);
    if (it != expected_.end() && s != nullptr && s->info.instance == m.refusal.sender_instance) {
      fail(it->second, RemoteError("prefill " + source_name(*s) + " refused request '" + m.refusal.request +
                                   "': " + m.refusal.reason));
    }
  }
}

void TpReceiver::Impl::on_landed(const std::string& from, const tp::TpLanded& landed) {
  auto it = expected_.find(landed.request);
  if (it == expected_.end()) return;  // a request already failed or forgotten
  tp::Expected& e = it->second;
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
    const auto t0 = tp::Clock::now();
    Status scattered =
        tp::scatter_from_host(arenas_, staging, pool_, window, {accepted->destination_head_offset, accepted->heads.count});
    e.report.scatter_ns += static_cast<std::uint64_t>(std::chrono::nanoseconds(tp::Clock::now() - t0).count());
    if (!scattered.ok()) {
      fail(e, scattered.with_context("request '" + landed.request + "': scattering"));
      return;
    }
  }
  e.report.bytes += bytes;
  ++e.report.pieces;
  if (e.progress.complete(e.tokens)) {
    e.done = true;
    e.report.elapsed_ns = static_cast<std::uint64_t>(std::chrono::nanoseconds(tp::Clock::now() - e.start).count());
    e.slot.release();
  }
}

}  // namespace kvferry
