// The target half of UcxEngine: registered regions and their remote keys, initiators'
// sessions (an endpoint back to each), notifications, and revocation on deregister.
#include <algorithm>
#include <future>
#include <set>

#include "backends/ucx/ucx_engine.h"
#include "core/byte_io.h"
#include "core/peer_auth.h"

namespace kvferry::detail::ucx {

Status UcxEngine::register_region(const RegionInfo& region) {
  return call(
      [this, region]() -> Status {
        ucp_mem_map_params_t mp{};
        mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
        mp.address = reinterpret_cast<void*>(region.address);
        mp.length = region.length;
        Served s;
        ucs_status_t st = ucp_mem_map(context_->get(), &mp, &s.memh);
        if (st != UCS_OK)
          return Unavailable("ucx: ucp_mem_map of " + std::to_string(region.length) + " bytes failed: " +
                             ucs_status_string(st));
        void* packed = nullptr;
        std::size_t size = 0;
        st = ucp_rkey_pack(context_->get(), s.memh, &packed, &size);
        if (st != UCS_OK || size == 0 || size > kMaxRkeyBytes) {
          if (st == UCS_OK) ucp_rkey_buffer_release(packed);
          ucp_mem_unmap(context_->get(), s.memh);
          return Unavailable(std::string("ucx: cannot pack a remote key: ") + ucs_status_string(st));
        }
        const auto* p = static_cast<const std::uint8_t*>(packed);
        s.rkey.assign(p, p + size);
        ucp_rkey_buffer_release(packed);
        served_.add(region, std::move(s));
        return Status::Ok();
      },
      cfg_.peer_timeout);
}

Status UcxEngine::deregister_region(std::uint64_t id) {
  auto rev = std::make_shared<std::future<Status>>();
  Status started = call(
      [this, id, rev]() -> Status {
        if (!served_.find(id)) return NotFound("ucx: region " + std::to_string(id) + " is not registered");
        auto r = std::make_unique<Revocation>();
        r->region = id;
        r->deadline = Clock::now() + cfg_.peer_timeout;
        *rev = r->done.get_future();
        for (auto& [sid, t] : targets_) {
          ByteWriter m;
          m.u64(sid);
          m.u64(id);
          if (send_am(t->ep, kRevoke, m.take(), nullptr).ok()) r->waiting.insert(sid);
        }
        revocations_.push_back(std::move(r));
        settle_revocations(false);
        return Status::Ok();
      },
      cfg_.peer_timeout);
  KVF_RETURN_IF_ERROR(started);
  if (rev->wait_for(cfg_.peer_timeout + std::chrono::seconds(2)) != std::future_status::ready)
    return Timeout("ucx: deregistering region " + std::to_string(id) + " did not finish in time");
  return rev->get();
}

// Unmaps regions whose revocation every initiator acknowledged; past the deadline, the
// silent initiators are dropped first.
void UcxEngine::settle_revocations(bool deadline_passed) {
  const auto now = Clock::now();
  for (auto& r : revocations_) {
    if (!r->waiting.empty() && (deadline_passed || now > r->deadline)) {
      for (auto sid : std::vector<std::uint64_t>(r->waiting.begin(), r->waiting.end()))
        drop_target_session(sid, "it did not acknowledge a revoked region in time");
    }
  }
  std::erase_if(revocations_, [this](std::unique_ptr<Revocation>& r) {
    if (!r->waiting.empty()) return false;
    auto* served = served_.find(r->region);
    if (served && served->value.inflight > 0) return false;  // data still moving in or out
    if (served) {
      ucp_mem_unmap(context_->get(), served->value.memh);
      served_.erase(r->region);
    }
    r->done.set_value(Status::Ok());
    return true;
  });
}

void UcxEngine::on_hello(const std::vector<std::uint8_t>& payload) {
  ByteReader r(payload);
  const std::uint32_t version = r.u32();
  const std::uint64_t id = r.u64();
  const std::uint32_t link_index = r.u32();
  const std::uint16_t name_len = r.u16();
  std::string name = name_len <= kMaxNameBytes ? r.str(name_len) : std::string();
  const std::uint32_t alen = r.u32();
  if (!r.ok() || version != kProtocolVersion || name.empty() || alen == 0 || alen > kMaxAddressBytes ||
      (r.remaining() != alen && r.remaining() != alen + kAuthNonceBytes))
    return;  // not a hello we understand: the initiator's connect times out
  auto address = r.take(alen);
  const bool offered = r.remaining() == kAuthNonceBytes;  // the initiator authenticates
  drop_target_session(id, "replaced");
  drop_pending_auth(id);
  // Answer over our end of the initiator's own endpoint (struct Link): the same connection.
  auto link = paired_link(std::vector<std::uint8_t>(address.begin(), address.end()), link_index);
  if (!link.ok()) return;  // nothing reaches the initiator there: its connect times out
  const std::string where = "agent '" + cfg_.agent_name + "', ucx";
  if (Status agree = auth_agreement(cfg_.secret != nullptr, offered, where); !agree.ok())
    return refuse_hello((*link)->ep, id, agree.message());
  auto t = std::make_unique<TargetSession>();
  t->id = id;
  t->name = std::move(name);
  t->link = (*link)->id;
  t->ep = (*link)->ep;
  (*link)->users++;
  (*link)->claimed = true;
  if (!cfg_.secret) return accept_target(std::move(t));
  // Challenge; the session serves nothing (and learns no remote key) until the proof.
  if (pending_auth_.size() >= kMaxPendingAuth) return release_link(t->link);
  PendingAuth pending{std::move(t), std::make_unique<TargetAuth>(cfg_.secret, "ucx"), Clock::now() + cfg_.peer_timeout};
  const std::vector<std::uint8_t> challenge = pending.auth->challenge(payload, std::span(payload).last(kAuthNonceBytes));
  ByteWriter w;
  w.u64(id);
  w.bytes(challenge);
  ucp_ep_h back = pending.session->ep;
  pending_auth_[id] = std::move(pending);
  if (!send_am(back, kChallenge, w.take(), nullptr).ok()) drop_pending_auth(id);
}

// The session is established: it is served, and its answer carries the remote keys.
void UcxEngine::accept_target(std::unique_ptr<TargetSession> t) {
  const std::uint64_t id = t->id;
  std::vector<RegionKey> serving;  // regions being revoked are no longer served
  for (auto& entry : served_) {  // not a structured binding: clang 14 cannot capture one
    auto& s = entry.second;
    if (std::none_of(revocations_.begin(), revocations_.end(), [&s](auto& rev) { return rev->region == s.info.id; }))
      serving.push_back(RegionKey{s.info.id, s.info.address, s.info.length, s.value.rkey});
  }
  ByteWriter w;
  w.u64(id);
  encode_region_keys(w, serving);
  ucp_ep_h back = t->ep;
  targets_[id] = std::move(t);
  if (!send_am(back, kHelloAck, w.take(), nullptr).ok()) drop_target_session(id, "the hello answer failed");
}

void UcxEngine::on_notify(const std::vector<std::uint8_t>& payload) {
  ByteReader r(payload);
  const std::uint64_t id = r.u64();
  auto it = targets_.find(id);
  if (!r.ok() || it == targets_.end() || r.remaining() > cfg_.max_notification_bytes) return;
  std::string message = r.str(r.remaining());
  if (cfg_.deliver) cfg_.deliver(it->second->name, std::move(message));
}

void UcxEngine::on_revoke_ack(const std::vector<std::uint8_t>& payload) {
  ByteReader r(payload);
  const std::uint64_t id = r.u64(), region = r.u64();
  if (!r.ok() || r.remaining() != 0) return;
  for (auto& rev : revocations_)
    if (rev->region == region) rev->waiting.erase(id);
  settle_revocations(false);
}

void UcxEngine::on_bye(const std::vector<std::uint8_t>& payload) {
  ByteReader r(payload);
  const std::uint64_t id = r.u64();
  if (r.ok() && r.remaining() == 0) drop_target_session(id, "the initiator closed the link");
}

void UcxEngine::drop_target_session(std::uint64_t id, const std::string&) {
  auto it = targets_.find(id);
  if (it == targets_.end()) return;
  const std::uint64_t link = it->second->link;
  targets_.erase(it);
  release_link(link);
  for (auto& rev : revocations_) rev->waiting.erase(id);
}

}  // namespace kvferry::detail::ucx
