// TpReceiver: a decode rank asking its prefill ranks for their shares of each request,
// scattering what lands, counting senders by agent and watching that they live
// (tp_receiver_impl.h says which file does what). This file: the public methods and the
// senders by name.
#include "kv/tp/tp_receiver_impl.h"

namespace kvferry {

tp::Source* TpReceiver::Impl::source_named(const std::string& peer) {
  for (tp::Source& s : sources_) {
    if (s.peer == peer) return &s;
  }
  return nullptr;
}

Status TpReceiver::Impl::refresh_source(tp::Source& source) {
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

std::vector<std::string> TpReceiver::Impl::describe_sources() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (const tp::Source& s : sources_) out.push_back(source_name(s));
  return out;
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
