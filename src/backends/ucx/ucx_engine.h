// UcxEngine: the ucx backend's one UCP worker per agent, driven by the agent's reactor
// (core/reactor.h).
//
// Every UCP call runs on the reactor thread (the worker is single-threaded): callers post
// commands to it (and wait, bounded, for those that return something). The reactor
// watches the worker's event fd; on readiness the engine progresses the worker a bounded
// number of times, then re-posts itself while it made progress recently (the `spin_us`
// window, so that a reply on its way is picked up without an epoll sleep) and otherwise
// arms the worker (ucp_worker_arm; UCS_ERR_BUSY: progress again). A timer on the reactor
// (every 5 ms while busy, 100 ms when idle) bounds stalls, answers and hellos.
//
// Initiator side (ucx_initiator.cc): a Session per peer rides a Link, a UCP endpoint that
// other sessions may share (peer error handling: a dead peer fails the link and every
// session on it), and holds the remote keys the peer answered our hello with (unpacked)
// and the jobs posted to it. With a shared secret, the hello is authenticated first
// (ucx_auth.cc). Pieces are cut into chunks and issued as ucp_put_nbx / ucp_get_nbx
// with at most `max_ops` in flight per session; a write's notification is sent as an
// active message only after ucp_ep_flush_nbx reported its data remotely complete, and
// the job finishes on the target's answer (PeerSession::settle: kept, refused, or no
// answer within peer_timeout). Without RDMA the chunks travel as active messages
// instead (ucx_am_data.cc; the commit carries the notification and its answer). No
// completion for `peer_timeout` while something is in flight fails the session (a
// stopped peer acknowledges nothing; PeerSession::check_activity) and closes its link;
// what the closed link leaves unfinished ends within kCutGrace of that, whether or not
// UCX reports it (Session::cut): a lost peer ends a request within our own bound.
//
// Target side (ucx_target.cc): registered regions (ucp_mem_map + packed rkeys, handed to
// each initiator in the answer to its hello), the sessions of initiators (each answered
// over the link paired with the initiator's own endpoint, which its hello names),
// notifications delivered to the agent (and answered: kept or refused), and revocation
// (core/revocation.h): deregistering a region tells every initiator, waits (bounded, on
// the deregistering thread) until each flushed what it had in flight or was cut off,
// then unmaps it.
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "backends/ucx/ucx_context.h"
#include "backends/ucx/ucx_wire.h"
#include "core/backend.h"
#include "core/peer_auth.h"
#include "core/peer_session.h"
#include "core/reactor.h"
#include "core/revocation.h"
#include "core/region_table.h"
#include "core/socket_util.h"

namespace kvferry::detail::ucx {

struct EngineConfig {
  std::string agent_name;
  std::shared_ptr<const SharedSecret> secret;  // null: sessions are not authenticated
  std::chrono::milliseconds peer_timeout{5000};
  std::size_t max_notification_bytes = 64 * 1024;
  DeliverNotification deliver;  // an error: the sender's request fails with it
  std::uint32_t max_ops = 64;             // puts/gets in flight per session
  std::uint64_t chunk_bytes = 1u << 20;   // largest single put/get
  std::uint32_t spin_us = 0;              // keep progressing (re-posted) this long after activity
  bool active_messages = false;           // data as active messages, not put/get
};

class UcxEngine;

struct RemoteKey {  // a peer's region, as its hello answer announced it
  ucp_rkey_h rkey = nullptr;
  bool revoked = false;
};

struct Session;

// What UCX hands back to the endpoint error callback: which link failed.
struct ErrTag {
  UcxEngine* engine = nullptr;
  std::uint64_t link = 0;
};

// A UCP endpoint to another worker, shared by every session that rides it (ucx_links.cc).
// UCP pairs the endpoints two workers create to each other by order: the n-th one this
// worker creates to a peer worker and the n-th one the peer creates to this worker are
// one connection, whoever asked for them. So an initiator's session endpoint may also be
// the target's endpoint back for another session, or the peer's own session endpoint to
// us; closing it for one would break the others. A link is therefore closed only when no
// session uses it (or when it failed, failing them all), and a hello names the index of
// the initiator's endpoint so that the target answers over the same connection.
struct Link {
  std::uint64_t id = 0;
  std::uint32_t index = 0;             // the n-th endpoint to this peer worker (UCX's pairing)
  std::vector<std::uint8_t> peer;      // the peer worker's address
  ucp_ep_h ep = nullptr;
  std::uint32_t users = 0;             // sessions (ours and the peer's) riding it
  bool claimed = false;                // has had a user (else: created for a hello on the way)
  bool failed = false;                 // UCX or the engine found it broken (it closes forced)
  Clock::time_point created{};
  std::unique_ptr<ErrTag> tag;         // outlives the endpoint until its close completed
};

// One post of a job on a session (reactor thread only, except `job`).
struct JobState {
  std::shared_ptr<TransferJob> job;
  Session* session = nullptr;
  std::size_t piece = 0;       // next piece to issue
  std::uint64_t offset = 0;    // within it
  std::uint32_t ops = 0;       // puts/gets in flight
  bool issued_all = false;     // nothing more will be issued
  std::uint32_t pending = 0;   // its flush / notification callbacks still to come
  bool tail = false;           // flush / notification started
  bool cancelled = false;
  std::uint64_t token = 0;     // active-message path: names this post at the target
  Status error;
};

// Active-message path: a read chunk waiting for the target's data.
struct ReadChunk {
  std::shared_ptr<JobState> js;
  void* local = nullptr;
  std::uint64_t length = 0;
  bool receiving = false;  // a rendezvous receive into `local` is in flight
};

// An initiator's session with one peer. Health, loss, the notifications awaiting the
// peer's answer and their deadlines, and the stall bound are its PeerSession's
// (core/peer_session.h); the engine keeps how bytes move.
struct Session {
  UcxEngine* engine = nullptr;
  std::uint64_t id = 0;
  std::string peer;
  // Reactor thread only.
  std::uint64_t link = 0;  // the link it rides (0: none)
  bool released = false;   // it no longer counts as a user of `link`
  bool torn_down = false;  // fail_session ran (the PeerSession may have failed first, on any thread)
  // When the link closed under what it still had in flight (its puts, gets, receives,
  // flushes): from then on those cannot touch our memory; UCX normally completes them at
  // once, and what it has not completed within kCutGrace the engine finishes itself
  // (`abandoned`: its jobs ended, their state kept until UCX lets go of it).
  Clock::time_point cut{};
  bool abandoned = false;
  ucp_ep_h ep = nullptr;   // the link's endpoint (null once the session failed)
  RegionTable<RemoteKey> regions;
  std::deque<std::shared_ptr<JobState>> waiting;  // pieces left to issue, in post order
  std::unordered_map<const TransferJob*, std::shared_ptr<JobState>> active;
  std::uint32_t ops = 0;
  std::uint32_t tails = 0;
  std::unordered_map<std::uint64_t, std::shared_ptr<JobState>> commits;  // token -> write awaiting its ack
  std::unordered_map<std::uint64_t, ReadChunk> reads;                    // chunk -> read awaiting data
  // Made by connect(). Its fail() may come from any thread (the connection's end, a
  // deadline); the engine's part of the loss (fail_session) follows on the reactor.
  std::unique_ptr<PeerSession> peer_session;
  bool closed = false;
  std::unique_ptr<InitiatorAuth> auth;  // with a secret, until the handshake is done
  std::vector<std::uint8_t> hello_bytes;  // the hello as sent (the proofs cover it)
  // Any thread.
  mutable std::mutex mu;
  std::condition_variable hello_cv;
  bool hello_done = false;
  Status hello;
};

class UcxEngine {
 public:
  // `reactor` serves the worker; null: the engine starts one of its own (tests without an agent).
  static Result<std::unique_ptr<UcxEngine>> start(std::unique_ptr<UcxContext> context, EngineConfig config,
                                                  std::shared_ptr<Reactor> reactor);
  ~UcxEngine();

  const UcxContext& context() const { return *context_; }
  bool active_messages() const { return cfg_.active_messages; }  // data as active messages, not put/get
  std::vector<std::uint8_t> connection_info() const;
  Status register_region(const RegionInfo& region);
  Status deregister_region(std::uint64_t id);
  Result<std::shared_ptr<Session>> connect(const PeerEndpoint& peer, Deadline deadline);
  Status post(const std::shared_ptr<Session>& s, const std::shared_ptr<TransferJob>& job);
  void cancel(const std::shared_ptr<Session>& s, const std::shared_ptr<TransferJob>& job);
  Status notify(const std::shared_ptr<Session>& s, std::string_view message);
  Status health(const Session& s) const;
  // Ends the session (on the reactor): a bye to the peer, then its loss (`why`).
  void close(const std::shared_ptr<Session>& s, const Status& why);
  // UCX's own estimate of its bandwidth to the peers connected so far (GB/s; 0: none yet).
  double reported_gbps() const { return reported_gbps_.load(std::memory_order_relaxed); }

 private:
  struct PostState {  // active-message writes of one post, at the target
    std::uint32_t receiving = 0;
    std::string refused;  // why a chunk was refused ("" : none)
    bool committed = false;
    std::optional<std::string> note;
  };
  struct TargetSession {
    std::uint64_t id = 0;    // the initiator's session id
    std::uint64_t link = 0;  // the link it answers over
    TargetRevocation::LinkId revocation = 0;  // its place on revocation_ (0: not served yet)
    std::string name;
    ucp_ep_h ep = nullptr;
    std::unordered_map<std::uint64_t, PostState> posts;
  };
  struct PendingAuth {  // a target session challenged and not yet proven (ucx_auth.cc)
    std::unique_ptr<TargetSession> session;
    std::unique_ptr<TargetAuth> auth;
    Clock::time_point deadline;
  };
  static constexpr std::size_t kMaxPendingAuth = 1024;
  struct Served {  // a registered region's UCX side (core/region_table.h keeps the region)
    ucp_mem_h memh = nullptr;
    std::vector<std::uint8_t> rkey;
    std::uint32_t inflight = 0;  // active-message receives into it / sends from it
    bool revoking = false;       // being deregistered: no longer served
  };

  UcxEngine(std::unique_ptr<UcxContext> context, EngineConfig config);
  bool on_thread() const { return reactor_->in_reactor_thread(); }
  // Runs `command` on the reactor thread soon (then progresses the worker).
  void submit(std::function<void()> command);
  // Runs `command` on the reactor thread and waits for it (bounded); inline on the thread.
  Status call(std::function<Status()> command, std::chrono::milliseconds bound);
  // Progresses the worker (bounded), handles what that delivered, then re-posts itself
  // or arms the worker's event fd. Reactor thread only.
  void pump();
  void schedule_pump();
  void after_command();
  void schedule_tick();  // the next check_timeouts (reactor thread)
  void shut_down();  // fails every session and link; reactor thread, once
  void handle_deferred();
  void check_timeouts();
  Status send_am(ucp_ep_h ep, AmId id, std::vector<std::uint8_t> payload, std::function<void(ucs_status_t)> done);
  void handle_am(AmId id, const std::vector<std::uint8_t>& payload);
  static ucs_status_t on_am(void* arg, const void* header, std::size_t header_length, void* data, std::size_t length,
                            const ucp_am_recv_param_t* param);
  static void on_op_done(void* request, ucs_status_t status, void* user_data);
  static void on_flush_done(void* request, ucs_status_t status, void* user_data);
  static void on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status);

  // Initiator side (ucx_initiator.cc).
  void open_session(const std::shared_ptr<Session>& s, const std::vector<std::uint8_t>& address);
  void issue(Session& s);
  void advance(JobState& js);
  void finish(JobState& js, Status status);
  void release(JobState& js);  // forgets a finished job once no callback refers to it
  void mark_dirty(JobState& js);
  void fail_session(Session& s, const Status& why);
  void end_cut_jobs(Session& s);  // finishes the jobs its closed link left unfinished
  Status closed_status(const Session& s) const;  // what a post to a failed or closed session gets
  void drop_rkeys(Session& s);
  void close_session(Session& s, const Status& why);
  void on_hello_ack(const std::vector<std::uint8_t>& payload);
  void on_notify_ack(const std::vector<std::uint8_t>& payload);
  // Sends `message` as request `req` (0: no answer wanted).
  Status send_notification(Session& s, std::uint64_t req, std::string_view message);
  void on_revoke(const std::vector<std::uint8_t>& payload);
  // Runs `done` once everything issued on `ep` so far is remotely complete (not on failure).
  static void flush(ucp_ep_h ep, std::function<void()> done);
  // Target side (ucx_target.cc).
  void on_hello(const std::vector<std::uint8_t>& payload);
  void on_notify(const std::vector<std::uint8_t>& payload);
  void on_revoke_ack(const std::vector<std::uint8_t>& payload);
  void on_bye(const std::vector<std::uint8_t>& payload);
  void drop_target_session(std::uint64_t id, const std::string& why);
  void accept_target(std::unique_ptr<TargetSession> t);
  // Shared-secret handshake (ucx_auth.cc, core/peer_auth.h).
  void refuse_hello(ucp_ep_h ep, std::uint64_t session, const std::string& why);
  void on_challenge(const std::vector<std::uint8_t>& payload);
  void on_response(const std::vector<std::uint8_t>& payload);
  void on_refuse(const std::vector<std::uint8_t>& payload);
  void drop_pending_auth(std::uint64_t id);
  void expire_pending_auth();
  // Active-message data path (ucx_am_data.cc).
  bool issue_am(Session& s, JobState& js, void* local, std::uint64_t remote, std::uint64_t len);
  void commit_am(Session& s, JobState& js);
  void fail_am(Session& s, const Status& why);
  Status send_data(ucp_ep_h ep, AmId id, const std::uint64_t (&header)[3], const void* data, std::size_t length,
                   std::function<void(ucs_status_t)> done);
  static ucs_status_t on_data_am(void* arg, const void* header, std::size_t header_length, void* data,
                                 std::size_t length, const ucp_am_recv_param_t* param);
  void on_put_data(const std::uint64_t* h, void* data, std::size_t length, bool rndv);
  void on_get_data(const std::uint64_t* h, void* data, std::size_t length, bool rndv);
  void on_commit(const std::vector<std::uint8_t>& payload);
  void on_commit_ack(const std::vector<std::uint8_t>& payload);
  void on_get_req(const std::vector<std::uint8_t>& payload);
  void answer_commit(TargetSession& t, std::uint64_t token);
  using ServedRegion = RegionTable<Served>::Entry;
  ServedRegion* serving(std::uint64_t address, std::uint64_t length);  // null: not served (or being revoked)
  void receive_into(void* desc, void* dest, std::size_t length, std::function<void(ucs_status_t)> done);
  // The revocation link of target session `id` (core/revocation.h): its operations run on
  // the deregistering thread and hand the UCP work to the reactor.
  TargetRevocation::Link revocation_link(std::uint64_t id);
  // Links (ucx_links.cc).
  Result<Link*> open_link(const std::vector<std::uint8_t>& peer);  // a new endpoint to it
  // The link paired with the peer's endpoint `index` to us, creating the endpoints before it.
  Result<Link*> paired_link(const std::vector<std::uint8_t>& peer, std::uint32_t index);
  void release_link(std::uint64_t id);  // one user less; closed when none is left
  void fail_link(std::uint64_t id, const Status& why);  // fails every session on it, closes it
  void close_link(Link& link);
  void close_all_links();
  void expire_spare_links();  // created for hellos that never came
  void close_ep(ucp_ep_h ep, bool force, std::unique_ptr<ErrTag> tag = nullptr);

  const EngineConfig cfg_;
  std::unique_ptr<UcxContext> context_;
  ucp_worker_h worker_ = nullptr;
  std::vector<std::uint8_t> address_;
  int worker_fd_ = -1;
  std::atomic<double> reported_gbps_{0};

  std::shared_ptr<Reactor> reactor_;
  Reactor::Id watch_ = 0;  // the worker's event fd
  Reactor::Id tick_ = 0;   // the next check_timeouts (reactor thread only)
  // Reactor thread only. False once the engine shut down: posted tasks still queued then
  // find it and do not touch the engine (the reactor cannot take back a post).
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool pump_posted_ = false;
  bool shutting_down_ = false;  // shut_down runs: the links it closes did not fail
  Clock::time_point last_active_{};

  std::vector<std::uint8_t> info_;  // connection info: set before the reactor serves the worker, then constant

  // Reactor thread only.
  std::unordered_map<std::uint64_t, std::shared_ptr<Session>> sessions_;
  std::vector<std::shared_ptr<JobState>> dirty_;  // jobs to look at again after progress
  // What UCX reported during a progress call that is handled after it: a control message
  // received, or an endpoint failed. Handled in the order UCX reported them: a peer that
  // answers and then closes (an agent that shuts down once it kept a notification) has its
  // answer counted before its link fails, as UCX delivered them.
  struct Report {
    AmId message = kHello;  // a message (when `failed` is false)
    std::vector<std::uint8_t> payload;
    bool failed = false;  // else: link `link` failed with `status`
    std::uint64_t link = 0;
    ucs_status_t status = UCS_OK;
  };
  std::vector<Report> reports_;
  RegionTable<Served> served_;
  std::unordered_map<std::uint64_t, std::unique_ptr<TargetSession>> targets_;
  std::unordered_map<std::uint64_t, PendingAuth> pending_auth_;  // by initiator session id
  // Any thread (core/revocation.h): every served target session joins it.
  TargetRevocation revocation_;
  struct PeerWorker {
    std::uint32_t created = 0;                        // endpoints created to it so far
    std::map<std::uint32_t, std::uint64_t> by_index;  // open links by index
  };
  std::map<std::vector<std::uint8_t>, PeerWorker> peer_workers_;  // by worker address, kept for
                                                                  // the engine's life (UCX's count is)
  std::unordered_map<std::uint64_t, std::unique_ptr<Link>> links_;
  std::uint64_t next_link_ = 1;
  struct Closing {
    void* request = nullptr;
    std::unique_ptr<ErrTag> tag;
  };
  std::vector<Closing> closing_;  // ep close requests in progress
  std::uint64_t next_token_ = 1;
  std::vector<std::unique_ptr<std::pair<UcxEngine*, AmId>>> am_args_;
};

}  // namespace kvferry::detail::ucx
