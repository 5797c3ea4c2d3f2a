// Links: UcxEngine's endpoints to other workers, shared by the sessions that ride them
// (struct Link in ucx_engine.h says why). Engine thread only.
//
// UCX counts the endpoints a worker creates to each peer worker (its connection sequence
// number) and pairs the n-th of each side. Every endpoint this engine creates goes
// through here, so `PeerWorker::created` is that count, and a link's index is its UCX
// sequence number. A connection to our own worker pairs n with n ^ 1 (UCX's loopback rule).
#include "backends/ucx/ucx_engine.h"

namespace kvferry::detail::ucx {
namespace {

// A hello may name an endpoint a few ahead of ours (sessions whose hellos are still on
// the way); more than this is a confused or hostile peer.
constexpr std::uint32_t kMaxLinksAhead = 64;

}  // namespace

Result<Link*> UcxEngine::open_link(const std::vector<std::uint8_t>& peer) {
  PeerWorker& pw = peer_workers_[peer];
  auto link = std::make_unique<Link>();
  link->id = next_link_++;
  link->index = pw.created++;  // UCX counts the attempt even when it fails
  link->peer = peer;
  link->tag = std::make_unique<ErrTag>(ErrTag{this, link->id});
  link->created = Clock::now();
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                  UCP_EP_PARAM_FIELD_ERR_HANDLER;
  ep.address = reinterpret_cast<const ucp_address_t*>(peer.data());
  ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  ep.err_handler.cb = &UcxEngine::on_ep_error;
  ep.err_handler.arg = link->tag.get();
  ucs_status_t st = ucp_ep_create(worker_, &ep, &link->ep);
  if (st != UCS_OK) {
    std::string hint;
    if (st == UCS_ERR_UNREACHABLE)
      hint = " (no UCX transport in use here (" + context_->describe() + ") reaches it with peer-failure detection; "
             "UCX 1.13's sysv/posix shared memory has none: add tcp, e.g. ucx.tls=sm,tcp)";
    return Unavailable(std::string("ucx: cannot reach the peer: ") + ucs_status_string(st) + hint);
  }
  pw.by_index[link->index] = link->id;
  Link* raw = link.get();
  links_[raw->id] = std::move(link);
  return raw;
}

Result<Link*> UcxEngine::paired_link(const std::vector<std::uint8_t>& peer, std::uint32_t index) {
  const std::uint32_t want = peer == address_ ? index ^ 1u : index;
  PeerWorker& pw = peer_workers_[peer];
  if (want >= pw.created && want - pw.created >= kMaxLinksAhead)
    return Corrupt("ucx: a hello names endpoint " + std::to_string(index) + ", " +
                   std::to_string(want - pw.created) + " ahead of ours");
  // Endpoints before it belong to sessions whose hellos are still on the way: created
  // now (unused), they are the ones those hellos will find.
  while (pw.created <= want) KVF_RETURN_IF_ERROR(open_link(peer).status());
  auto it = pw.by_index.find(want);
  if (it == pw.by_index.end())
    return Unavailable("ucx: endpoint " + std::to_string(index) + " of the peer was already closed here");
  return links_.at(it->second).get();
}

void UcxEngine::release_link(std::uint64_t id) {
  auto it = links_.find(id);
  if (it == links_.end()) return;
  if (it->second->users > 0) --it->second->users;
  if (it->second->users == 0) close_link(*it->second);
}

void UcxEngine::close_link(Link& link) {
  auto pw = peer_workers_.find(link.peer);
  if (pw != peer_workers_.end()) pw->second.by_index.erase(link.index);
  // A link that failed, or on which a session of ours still has jobs (puts, gets,
  // receives, flushes in flight), closes forced: that completes every operation in flight
  // on it (with an error) and stops them touching our memory; what UCX does not complete
  // ends anyway (Session::cut). Any other link is flushed first: the messages sent on it
  // before (a notification, the answer to one, a bye) still leave rather than being
  // discarded. The close request is reaped by check_timeouts, or bounded by the destructor.
  bool jobs_on_it = false;
  for (auto& [sid, s] : sessions_)
    jobs_on_it = jobs_on_it || (s->link == link.id && (s->ops > 0 || !s->active.empty()));
  const bool force = link.failed || jobs_on_it;
  if (force) {
    const auto now = Clock::now();
    for (auto& [sid, s] : sessions_)
      if (s->link == link.id && s->cut == Clock::time_point{} && (s->ops > 0 || s->tails > 0)) s->cut = now;
  }
  close_ep(link.ep, force, std::move(link.tag));
  links_.erase(link.id);  // destroys `link`
}

void UcxEngine::fail_link(std::uint64_t id, const Status& why) {
  auto it = links_.find(id);
  if (it == links_.end()) return;
  it->second->users = 1u << 30;  // the users below do not close it one by one
  it->second->failed = !shutting_down_;  // (shutting down, every link comes here: not failed)
  for (auto& [sid, s] : sessions_)
    if (s->link == id && !s->torn_down) fail_session(*s, why);
  std::vector<std::uint64_t> targets;
  for (auto& [tid, t] : targets_)
    if (t->link == id) targets.push_back(tid);
  for (auto tid : targets) drop_target_session(tid, why.message());
  it = links_.find(id);
  if (it != links_.end()) close_link(*it->second);
}

// A link created for a hello that did not come within peer_timeout (its session was
// closed before the hello left, or the hello was lost with its connection) is closed.
void UcxEngine::expire_spare_links() {
  const auto now = Clock::now();
  std::vector<Link*> spare;
  for (auto& [id, l] : links_)
    if (l->users == 0 && !l->claimed && now - l->created > cfg_.peer_timeout) spare.push_back(l.get());
  for (Link* l : spare) close_link(*l);
}

void UcxEngine::close_all_links() {
  std::vector<std::uint64_t> ids;
  for (auto& [id, l] : links_) ids.push_back(id);
  for (auto id : ids) fail_link(id, PeerLost("the agent is shutting down"));
}

}  // namespace kvferry::detail::ucx
