// TcpEngine: the tcp backend's sockets and everything it owns, served on the agent's
// reactor (core/reactor.h); the engine starts no thread of its own.
//
// The reactor watches the listening socket and every stream socket (initiated and
// accepted) and runs a periodic check (peer sessions' pings and deadlines, silent
// accepted streams, the accept back-off). Engine state (sockets, sessions, the region
// table, user memory) is touched only under `engine_mu_`, which every handler holds while
// it runs. Other threads talk to the engine through commands (post, cancel, notify,
// register, deregister, add/close session) run in order by a reactor task; synchronous
// commands wait for theirs (inline when called on the reactor thread). post() takes a
// short cut: if the engine is idle it runs the command queue and starts the job on the
// caller's thread, saving a thread wake-up on the latency-critical path. A stream closed
// off the reactor thread keeps its socket and watch until the reactor retires both
// (settle): an fd is never closed while a watch on it may still fire.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "backends/tcp/tcp_wire.h"
#include "core/backend.h"
#include "core/device_stager.h"
#include "core/peer_auth.h"
#include "core/peer_session.h"
#include "core/reactor.h"
#include "core/region_table.h"
#include "core/socket_util.h"

namespace kvferry::detail::tcp {

inline constexpr std::uint64_t kInlinePostBytes = 64u << 10;  // post() starts these itself

struct EngineConfig {
  std::string agent_name;
  std::chrono::milliseconds peer_timeout{5000};
  std::uint64_t chunk_bytes = 1u << 20;   // largest segment
  std::uint64_t batch_bytes = 4u << 20;   // data bytes per batch frame
  std::uint64_t min_stripe_bytes = 256u << 10;
  std::size_t max_notification_bytes = 64 * 1024;
  // While requests are outstanding, the reactor keeps polling (a re-posted task, so other
  // handlers still run between turns) this long after the last event instead of sleeping.
  std::uint32_t spin_us = 0;
  DeliverNotification deliver;
  std::shared_ptr<const SharedSecret> secret;  // null: streams are not authenticated
};

struct Session;
struct Segment;
struct Stream;
struct OutFrame;
enum class Sink;

class TcpEngine : public std::enable_shared_from_this<TcpEngine> {
 public:
  // Serves `listener` and the streams on `reactor` (shared with the agent's other users).
  static Result<std::shared_ptr<TcpEngine>> start(EngineConfig config, UniqueFd listener,
                                                  std::shared_ptr<Reactor> reactor);
  TcpEngine(EngineConfig config, UniqueFd listener, std::shared_ptr<Reactor> reactor);  // use start()
  ~TcpEngine();  // ends every watch and timer of the engine; fails every unfinished job

  // Hands connected, handshaken stream sockets of a new outgoing session to the engine;
  // returns the session's PeerSession (its health, for the connection).
  Result<std::shared_ptr<PeerSession>> add_session(std::uint64_t session_id, std::string peer,
                                                   std::vector<UniqueFd> fds);
  // Fails the session (its jobs finish with PeerLost naming `why`) and closes its streams.
  void close_session(std::uint64_t session_id, const Status& why);
  Status post(std::uint64_t session_id, std::shared_ptr<TransferJob> job);
  void cancel(std::uint64_t session_id, const std::shared_ptr<TransferJob>& job);
  Status notify(std::uint64_t session_id, std::string message);
  Status register_region(const RegionInfo& region);
  Status deregister_region(std::uint64_t id);

 private:
  using Command = std::function<void()>;
  // Runs `fn` on the reactor thread and waits for it (bounded: one loop iteration).
  Status run_sync(std::function<Status()> fn);
  void enqueue(Command cmd);
  void run_commands();  // with engine_mu_ held

  // Reactor handlers: each takes engine_mu_, does its work, then settle().
  void on_stream_event(Stream* s, std::uint32_t events);
  void on_tick();
  // With engine_mu_ held, on the reactor thread: retires closed streams' watches and
  // sockets, erases dead sessions, and keeps the spin window going while busy.
  void settle();
  void spin_turn();
  // Serves a stream's socket on the reactor; false (and the stream closed) on failure.
  bool watch_stream(Stream& s);
  // Asks the reactor to settle soon (after work done on a caller's thread).
  void request_settle();

  // With engine_mu_ held below (reactor thread, or a caller's in post()'s short cut).
  void on_accept();
  void on_readable(Stream& s);
  void on_writable(Stream& s);
  bool handle_header(Stream& s);
  void handle_payload_done(Stream& s);
  void start_job(Session& ss, std::shared_ptr<TransferJob> job);
  void abort_request(Session& ss, std::uint64_t req, const Status& why);
  void drop_unsent(Session& ss, std::uint64_t req);  // of request `req`: unsent frames, reads' data
  void queue_frame(Stream& s, OutFrame frame);
  void close_stream(Stream& s);
  void process_hello(Stream& s);
  void maybe_finish(Session& ss, std::uint64_t req);
  void fail_session(Session& ss, const Status& why);
  // A PeerSession whose loss releases `ss` (ss.key, ss.initiator set).
  std::shared_ptr<PeerSession> new_peer_session(Session& ss, std::string peer);
  void release_session(Session& ss);  // the engine's half of a loss (PeerSession's on_lost)
  void check_timeouts();
  void update_interest(Stream& s);
  const RegionInfo* find_region(std::uint64_t addr, std::uint64_t len) const;
  void deregister_on_thread(std::uint64_t id);
  void deliver_pending_notify(Session& ss, std::uint64_t req);
  void zero_segments(OutFrame& f);
  bool begin_body(Stream& s, Sink sink, std::uint64_t bytes, bool last);
  bool on_write_table(Stream& s);
  bool on_read_table(Stream& s);
  // The region check a peer's segment table is held to (tcp_frame_check.h).
  std::function<bool(std::uint64_t, std::uint64_t)> inside_fn() const;
  // Fails the session of a peer that sent a malformed table; tells it why first. False.
  bool refuse_frame(Stream& s, const std::string& what);

  // vram regions served through pinned memory (tcp_vram.cc). Each returns an error text
  // for the initiator, empty on success.
  std::string stage_write_to_vram(Stream& s);        // re-points vram segments into s.bounce
  std::string land_staged_write(Stream& s);          // copies s.bounce into vram
  std::string stage_read_from_vram(OutFrame& f);     // copies vram into a pinned buffer
  void queue_read_reply(Stream& s, OutFrame f);      // stages now, or defers under the cap
  void release_deferred_reads(Stream& s);            // after sends freed staged bytes
  void stage_and_queue_reply(Stream& s, OutFrame f);
  // (index, GPU) of the segments in vram regions; empty at once while none is registered.
  std::vector<std::pair<std::size_t, int>> vram_segments(const std::vector<Segment>& segs) const;
  Result<DeviceStager*> stager();
  Result<PinnedBuffer> take_pinned(std::uint64_t bytes);

  EngineConfig cfg_;
  UniqueFd listener_;
  std::shared_ptr<Reactor> reactor_;
  Reactor::Id listener_watch_ = 0;
  Reactor::Id tick_ = 0;

  std::mutex engine_mu_;  // held while engine state is being processed
  std::mutex cmd_mu_;
  std::vector<Command> commands_;
  bool stopping_ = false;

  // Engine state (under engine_mu_).
  RegionTable<> regions_;
  std::unordered_map<std::uint64_t, std::unique_ptr<Session>> sessions_;  // by local session key
  std::vector<std::unique_ptr<Stream>> pending_;  // accepted, before their hello
  Clock::time_point accept_paused_until_{};       // listener not watched until then (EMFILE)
  // Closed streams' watches and sockets, released by settle() on the reactor thread.
  std::vector<std::pair<Reactor::Id, UniqueFd>> retired_;
  bool settle_requested_ = false;
  // The spin window (spin_us), kept by settle() and spin_turn() on the reactor thread only.
  Clock::time_point spin_until_{};  // poll without sleeping until then
  bool spin_busy_ = false;          // requests or answers outstanding as of the last settle()
  std::atomic<bool> spinning_{false};  // a spin turn is posted (read by post() too)
  std::unordered_map<std::uint64_t, std::uint64_t> accepted_by_remote_;  // remote session id -> key
  std::vector<std::uint64_t> dead_sessions_;  // erased at the end of a loop iteration
  std::uint64_t next_local_key_ = 1ull << 62;  // keys for accepted sessions
  std::vector<std::uint8_t> scratch_;           // sink for discarded payloads
  std::uint8_t* zeros_ = nullptr;               // source for cancelled payloads (zero_segments)
  std::shared_ptr<DeviceStager> stager_;        // on first use of a vram region
  std::size_t vram_regions_ = 0;                // of regions_: host-only frames skip vram checks
  // Pinned buffers of finished read frames, for reuse (shared with the frames' deleters).
  std::shared_ptr<std::pair<std::mutex, std::vector<PinnedBuffer>>> pinned_pool_ =
      std::make_shared<std::pair<std::mutex, std::vector<PinnedBuffer>>>();
  bool running_ = true;  // cleared by the destructor's last command (under engine_mu_)
};

}  // namespace kvferry::detail::tcp
