// Asking another agent's side channel from the reactor thread, without blocking it:
//
//   SideChannelCall   one request and its reply (the protocol of side_channel_call), each
//                     step a watch or a timer: connect, the handshake, the request, the
//                     reply, all within a deadline;
//   PeerProbes        "is the instance loaded under this name still there?" asked of its
//                     side channel: concurrent askers of one instance share one call, and
//                     the calls in flight are capped, so a flood of pushed metadata cannot
//                     make the agent open a connection per push.
//
// Threading: both live on the reactor thread. Start, ask and stop there (a side channel
// handler runs there; others use Reactor::run_sync); completions run there too.
// Ownership: the owner keeps PeerProbes and stops it before the reactor goes; a
// SideChannelCall is owned by its watches until it completes or is cancelled.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/reactor.h"
#include "core/side_channel.h"

namespace kvferry::detail {

class SideChannelCall {
 public:
  using Done = std::function<void(Result<std::vector<std::uint8_t>>)>;
  // Starts the call; `done` runs exactly once on the reactor thread, never inside start
  // (unless the reactor is stopping, then not at all), unless cancel() comes first. `host`
  // must be a numeric address: a name would need a resolver, which blocks.
  static std::shared_ptr<SideChannelCall> start(std::shared_ptr<Reactor> reactor, const std::string& host,
                                                std::uint16_t port, SideFrame type,
                                                std::span<const std::uint8_t> payload, SideFrame expect,
                                                Deadline deadline, std::shared_ptr<const SharedSecret> secret,
                                                Done done);
  // Ends the call; `done` is not called. Reactor thread only.
  void cancel();

  struct State;
  explicit SideChannelCall(std::shared_ptr<State> state) : state_(std::move(state)) {}

 private:
  std::shared_ptr<State> state_;
};

class PeerProbes {
 public:
  // The probe's answer: the metadata the side channel gave (its payload), or why not.
  using Done = std::function<void(const Result<std::vector<std::uint8_t>>&)>;
  PeerProbes(std::shared_ptr<Reactor> reactor, std::shared_ptr<const SharedSecret> secret,
             std::size_t max_in_flight, std::size_t max_waiters);
  ~PeerProbes();  // stop() must have run
  PeerProbes(const PeerProbes&) = delete;
  PeerProbes& operator=(const PeerProbes&) = delete;

  // Fetches the metadata of the side channel at host:port for `key` (the instance asked
  // about): joins the probe in flight for `key`, or starts one that ends by `deadline`.
  // Unavailable (and `done` not kept) when max_in_flight probes run or this one has
  // max_waiters, or after stop(). Reactor thread only.
  Status ask(const std::string& key, const std::string& host, std::uint16_t port, Deadline deadline, Done done);
  // Ends every probe; their waiters are told Unavailable. Reactor thread only; idempotent.
  void stop();
  std::size_t in_flight() const { return probes_.size(); }
  // Probes started so far (coalesced askers do not start one).
  std::uint64_t started() const { return started_; }

 private:
  struct Probe {
    std::shared_ptr<SideChannelCall> call;
    std::vector<Done> waiters;
  };
  void finish(const std::string& key, const Result<std::vector<std::uint8_t>>& result);

  std::shared_ptr<Reactor> reactor_;
  std::shared_ptr<const SharedSecret> secret_;
  std::size_t max_in_flight_;
  std::size_t max_waiters_;
  std::map<std::string, Probe> probes_;
  std::uint64_t started_ = 0;
  bool stopped_ = false;
};

}  // namespace kvferry::detail
