// The shared-secret handshake of UcxEngine's sessions (AgentOptions::secret), the one of
// core/peer_auth.h over active messages: the hello carries the initiator's nonce, the
// target answers a challenge instead of its hello answer, the initiator's proof follows,
// and only then does the target serve the session and send the remote keys of its
// memory. A target session waiting for a proof is in pending_auth_, where no data,
// notification or read request finds it; it expires after peer_timeout, and at most
// kMaxPendingAuth wait at once. Engine thread only.
#include "backends/ucx/ucx_engine.h"
#include "core/byte_io.h"

namespace kvferry::detail::ucx {

void UcxEngine::refuse_hello(ucp_ep_h ep, std::uint64_t session, const std::string& why) {
  ByteWriter w;
  w.u64(session);
  w.str(std::string_view(why).substr(0, 1024));
  (void)send_am(ep, kRefuse, w.take(), nullptr);
}

// Initiator: check the target's proof, answer with ours.
void UcxEngine::on_challenge(const std::vector<std::uint8_t>& payload) {
  ByteReader r(payload);
  const std::uint64_t id = r.u64();
  auto it = sessions_.find(id);
  if (!r.ok() || it == sessions_.end() || it->second->peer_session->dead() || it->second->hello_done ||
      !it->second->auth)
    return;
  Session& s = *it->second;
  auto proof = s.auth->respond(s.hello_bytes, r.take(r.remaining()), "peer '" + s.peer + "', ucx");
  s.auth.reset();  // one challenge per session
  if (!proof.ok()) return fail_session(s, proof.status());
  ByteWriter w;
  w.u64(id);
  w.bytes(*proof);
  Status sent = send_am(s.ep, kResponse, w.take(), nullptr);
  if (!sent.ok()) fail_link(s.link, sent);
}

// Target: the initiator's proof; a good one establishes the session.
void UcxEngine::on_response(const std::vector<std::uint8_t>& payload) {
  ByteReader r(payload);
  const std::uint64_t id = r.u64();
  auto it = pending_auth_.find(id);
  if (!r.ok() || it == pending_auth_.end()) return;
  PendingAuth pending = std::move(it->second);
  pending_auth_.erase(it);
  Status ok = pending.auth->verify(r.take(r.remaining()), "agent '" + cfg_.agent_name + "', ucx");
  if (!ok.ok()) {
    refuse_hello(pending.session->ep, id, ok.message());
    return release_link(pending.session->link);
  }
  accept_target(std::move(pending.session));
}

// Initiator: the target refused the hello (the secrets disagree, or our proof was wrong).
void UcxEngine::on_refuse(const std::vector<std::uint8_t>& payload) {
  ByteReader r(payload);
  const std::uint64_t id = r.u64();
  std::string why = r.str(std::min<std::size_t>(r.remaining(), 1024));
  auto it = sessions_.find(id);
  if (!r.ok() || it == sessions_.end() || it->second->peer_session->dead() || it->second->hello_done) return;
  fail_session(*it->second, RemoteError("ucx: peer '" + it->second->peer + "' refused the connection: " + why));
}

void UcxEngine::drop_pending_auth(std::uint64_t id) {
  auto it = pending_auth_.find(id);
  if (it == pending_auth_.end()) return;
  const std::uint64_t link = it->second.session->link;
  pending_auth_.erase(it);
  release_link(link);
}

void UcxEngine::expire_pending_auth() {
  const auto now = Clock::now();
  std::vector<std::uint64_t> expired;
  for (auto& [id, p] : pending_auth_)
    if (now > p.deadline || !links_.contains(p.session->link)) expired.push_back(id);
  for (auto id : expired) drop_pending_auth(id);
}

}  // namespace kvferry::detail::ucx
