// tp_receiver_impl.h — the inside of a TpReceiver (kvferry/kv/tp_transfer.h), shared by
// its files, one purpose each:
//   tp_receiver.cc          the public methods, the senders by name;
//   tp_receiver_connect.cc  create and connect: which agent is which prefill rank, the
//                           route to each (what kAuto counts);
//   tp_receiver_expect.cc   expect: the path, the staging slot, the asks;
//   tp_receiver_landed.cc   what lands: a piece counted per sender and scattered;
//   tp_receiver_watch.cc    progress and wait: the inbox, the senders' liveness probes.
// Every member after the constructor is guarded by `mutex_`.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kv/tp/tp_endpoint.h"
#include "kv/tp/tp_receiver_state.h"
#include "kv/tp/tp_staging.h"
#include "kvferry/kv/tp_transfer.h"

namespace kvferry {
namespace tp {

using Clock = std::chrono::steady_clock;

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
  // The backend the Agent routes host bytes with this sender through (learned from the
  // first probe, at connect): what kAuto's estimate counts.
  std::string route_backend;
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

}  // namespace tp

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
    for (tp::Source& s : sources_) s.probe.reset();
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
  tp::Source* source_named(const std::string& peer);
  Status refresh_source(tp::Source& source);
  Result<TransferRequest> make_probe(std::size_t source);
  Status learn_route(std::size_t source);
  TpPath choose_path(std::uint64_t tokens, TpPath asked) const;
  void handle(const Notification& n);
  void on_landed(const std::string& from, const tp::TpLanded& landed);
  void fail(tp::Expected& e, Status why);
  void watch_sources();
  std::string source_name(const tp::Source& s) const {
    return "'" + s.peer + "' (prefill rank " + std::to_string(s.info.rank) + ", heads [" +
           std::to_string(s.share.heads.first) + ", " + std::to_string(s.share.heads.end()) + "))";
  }

  Agent& agent_;
  const KvPool pool_;
  const TpReceiverOptions options_;
  const TpMapping mapping_;
  const std::uint64_t instance_;
  mutable std::mutex mutex_;
  std::vector<tp::Source> sources_;                  // the shares of this decode rank, in order
  std::unique_ptr<std::uint64_t[]> probe_words_; // one per source, registered
  tp::StagingArenas arenas_;
  std::map<std::string, tp::Expected, std::less<>> expected_;
  tp::OtherInbox others_;
  TpReceiveReport last_report_;
  std::vector<std::pair<StagingSlot, tp::Clock::time_point>> quarantine_;  // slots of failed requests
};

}  // namespace kvferry
