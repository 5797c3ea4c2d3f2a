// TpReceiver: progress and wait (tp_receiver_impl.h): the inbox drained, the senders
// a request waits on probed with 8-byte reads, a silent or dead one failing the requests
// within peer_timeout.
#include "kv/tp/tp_receiver_impl.h"

#include <algorithm>

namespace kvferry {

void TpReceiver::Impl::watch_sources() {
  const auto interval = std::max(std::chrono::milliseconds(10), options_.peer_timeout / 4);
  const auto now = tp::Clock::now();
  for (std::size_t i = 0; i < sources_.size(); ++i) {
    tp::Source& s = sources_[i];
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
        Result<TransferRequest> probe = make_probe(i);
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
  const auto now = tp::Clock::now();
  std::erase_if(quarantine_, [&](const auto& q) { return q.second <= now; });
  return Status::Ok();
}

Status TpReceiver::Impl::wait(std::string_view id, std::chrono::milliseconds timeout) {
  const auto deadline = tp::Clock::now() + timeout;
  while (true) {
    (void)progress();
    {
      std::lock_guard lock(mutex_);
      auto it = expected_.find(id);
      if (it == expected_.end()) return NotFound("tp wait: no request '" + std::string(id) + "' expected");
      tp::Expected& e = it->second;
      if (e.done || !e.error.ok()) {
        Status result = e.error;
        if (!result.ok()) e.report.elapsed_ns = static_cast<std::uint64_t>(std::chrono::nanoseconds(tp::Clock::now() - e.start).count());
        last_report_ = e.report;
        expected_.erase(it);
        return result;
      }
      if (tp::Clock::now() >= deadline) {
        return Timeout("tp wait: request '" + std::string(id) + "' incomplete; missing " +
                       e.progress.describe_missing(e.tokens));
      }
    }
    // Landed pieces arrive as notifications and wake us; probes are looked at this often.
    agent_.wait_for_notifications(std::chrono::milliseconds(5));
  }
}

}  // namespace kvferry
