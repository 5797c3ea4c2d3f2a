// TpReceiver: create and connect (tp_receiver_impl.h): which loaded agent is which
// prefill rank, their pools checked against ours, and the route to each.
#include "kv/tp/tp_receiver_impl.h"

namespace kvferry {

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
  std::vector<tp::Source> sources;
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
    sources.push_back(tp::Source{peer, info, std::move(remote), share, std::nullopt, {}, Status::Ok()});
  }
  if (sources.empty()) return Internal("tp receiver: the mapping gives decode rank no share");
  auto probe_words = std::make_unique<std::uint64_t[]>(sources.size());
  DescriptorList region(MemoryKind::kDram);
  region.add(make_descriptor(probe_words.get(), sizeof(std::uint64_t) * sources.size()));
  KVF_RETURN_IF_ERROR(agent_.register_memory(region).with_context("tp receiver: registering its probe words"));
  sources_ = std::move(sources);
  probe_words_ = std::move(probe_words);
  for (std::size_t i = 0; i < sources_.size(); ++i) {
    KVF_RETURN_IF_ERROR(learn_route(i).with_context("tp receiver: prefill " + source_name(sources_[i])));
  }
  return Status::Ok();
}

Status TpReceiver::Impl::learn_route(std::size_t i) {
  // The first liveness probe, waited for: its route is the one the Agent picks for host
  // bytes with this sender.
  tp::Source& s = sources_[i];
  KVF_ASSIGN_OR_RETURN(TransferRequest probe, make_probe(i));
  s.probe_posted = tp::Clock::now();
  KVF_RETURN_IF_ERROR(probe.post());
  KVF_RETURN_IF_ERROR(probe.wait(options_.peer_timeout).with_context("the first liveness probe"));
  s.route_backend = probe.telemetry().backend;
  s.probe = std::move(probe);
  return Status::Ok();
}

Result<TransferRequest> TpReceiver::Impl::make_probe(std::size_t i) {
  DescriptorList local(MemoryKind::kDram);
  local.add(make_descriptor(probe_words_.get() + i, sizeof(std::uint64_t)));
  DescriptorList remote(MemoryKind::kDram);
  remote.add(sources_[i].info.heartbeat_address, sizeof(std::uint64_t));
  return agent_.create_transfer(TransferOp::kRead, local, sources_[i].peer, remote);
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

}  // namespace kvferry
