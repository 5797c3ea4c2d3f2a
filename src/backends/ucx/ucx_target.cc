// The target half of UcxEngine: registered regions and their remote keys, initiators'
// sessions (an endpoint back to each), notifications, and revocation on deregister.
#include <algorithm>
#include <thread>

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
  if (on_thread()) return Internal("ucx: deregister_region on the event loop's thread would wait for itself");
  // No longer served from here on: not to new sessions, not to chunks that arrive.
  KVF_RETURN_IF_ERROR(call(
      [this, id]() -> Status {
        auto* served = served_.find(id);
        if (!served) return NotFound("ucx: region " + std::to_string(id) + " is not registered");
        if (served->value.revoking) return NotFound("ucx: region " + std::to_string(id) + " is being deregistered");
        served->value.revoking = true;
        return Status::Ok();
      },
      cfg_.peer_timeout));
  // Every initiator confirms that nothing it issued still uses it, or is cut off (bounded).
  revocation_.revoke(id);
  // Then the data moving in or out of it by active message ends (a cut-off link fails its
  // receives), and it is unmapped.
  const auto deadline = Clock::now() + cfg_.peer_timeout;
  for (;;) {
    auto unmapped = std::make_shared<bool>(false);  // shared: a late run outlives a timed-out call
    KVF_RETURN_IF_ERROR(call(
        [this, id, unmapped]() -> Status {
          auto* served = served_.find(id);
          if (served && served->value.inflight > 0) return Status::Ok();
          if (served) {
            ucp_mem_unmap(context_->get(), served->value.memh);
            served_.erase(id);
          }
          *unmapped = true;
          return Status::Ok();
        },
        cfg_.peer_timeout));
    if (*unmapped) return Status::Ok();
    if (Clock::now() > deadline)
      return Timeout("ucx: deregistering region " + std::to_string(id) + ": data still moving after " +
                     std::to_string(cfg_.peer_timeout.count()) + " ms");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

TargetRevocation::Link UcxEngine::revocation_link(std::uint64_t id) {
  return TargetRevocation::Link{
      [this, id](std::uint64_t region) -> Status {
        return call(
            [this, id, region]() -> Status {
              auto t = targets_.find(id);
              if (t == targets_.end()) return PeerLost("ucx: the initiator's session is gone");
              ByteWriter m;
              m.u64(id);
              m.u64(region);
              return send_am(t->second->ep, kRevoke, m.take(), nullptr);
            },
            cfg_.peer_timeout);
      },
      [this, id](const std::string& why) { submit([this, id, why] { drop_target_session(id, why); }); }};
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
  for (auto& [address, s] : served_)
    if (!s.value.revoking) serving.push_back(RegionKey{s.info.id, s.info.address, s.info.length, s.value.rkey});
  ByteWriter w;
  w.u64(id);
  encode_region_keys(w, serving);
  ucp_ep_h back = t->ep;
  // Joined in the same step that lists the regions (the reactor thread): a concurrent
  // deregister either finds this session or marked its region before the list was made.
  t->revocation = revocation_.join(revocation_link(id));
  targets_[id] = std::move(t);
  if (!send_am(back, kHelloAck, w.take(), nullptr).ok()) drop_target_session(id, "the hello answer failed");
}

void UcxEngine::on_notify(const std::vector<std::uint8_t>& payload) {
  ByteReader r(payload);
  const std::uint64_t id = r.u64(), req = r.u64();
  auto it = targets_.find(id);
  if (!r.ok() || it == targets_.end()) return;
  Status kept = r.remaining() > cfg_.max_notification_bytes
                    ? InvalidArgument("ucx: a notification of " + std::to_string(r.remaining()) +
                                      " bytes is larger than this agent accepts")
                    : Status::Ok();
  if (kept.ok() && cfg_.deliver) kept = cfg_.deliver(it->second->name, r.str(r.remaining()));
  if (req == 0) return;  // the sender asked for no answer
  ByteWriter w;
  w.u64(id);
  w.u64(req);
  w.str(kept.ok() ? std::string() : kept.message());
  (void)send_am(it->second->ep, kNotifyAck, w.take(), nullptr);
}

void UcxEngine::on_revoke_ack(const std::vector<std::uint8_t>& payload) {
  ByteReader r(payload);
  const std::uint64_t id = r.u64(), region = r.u64();
  if (!r.ok() || r.remaining() != 0) return;
  if (auto t = targets_.find(id); t != targets_.end()) revocation_.confirmed(t->second->revocation, region);
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
  if (it->second->revocation != 0) revocation_.leave(it->second->revocation);
  targets_.erase(it);
  release_link(link);
}

}  // namespace kvferry::detail::ucx
