// Side channel: a small TCP service through which peers fetch our metadata, push theirs
// and send notifications. Frames (all input untrusted, capped at kMaxSideFrameBytes):
//
//   magic u32 "KVFS" | type u16 | reserved u16 | payload length u32 | payload
//
// Requests: kFetch (payload: the caller's metadata or empty) -> kMetadata (ours);
//           kNotify (payload: name length u16, name, message) -> kOk.
// Any failure -> kError (payload: message) or the connection is closed.
//
// With a shared secret (core/peer_auth.h) the client first sends kAuthHello (its nonce)
// and the server answers kChallenge (its nonce and proof); then every request and reply
// carries a 32-byte HMAC tag after its payload, bound to both nonces, the direction and
// the frame's sequence number on the connection: a recorded frame is refused on any other
// connection or position. A server with a secret answers an unauthenticated request with
// kError ("authentication required"); one without answers kAuthHello with kError. The
// agent's reactor serves the listener and every connection (non-blocking reads and
// replies; the handlers above run on the reactor thread); an idle or slow connection is
// dropped after a timeout, so garbage on the port costs nothing but a socket for a while.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <utility>
#include <span>
#include <string>
#include <vector>

#include "core/peer_auth.h"
#include "core/reactor.h"
#include "core/socket_util.h"
#include "kvferry/status.h"

namespace kvferry::detail {

inline constexpr std::uint32_t kSideMagic = 0x5346564b;  // "KVFS" little-endian
inline constexpr std::size_t kMaxSideFrameBytes = 16u << 20;
inline constexpr std::size_t kSideHeaderBytes = 12;

enum class SideFrame : std::uint16_t {
  kFetch = 1,
  kMetadata = 2,
  kNotify = 3,
  kOk = 4,
  kError = 5,
  kAuthHello = 6,
  kChallenge = 7,
};

// The next complete frame at the start of `in`: nullopt while it is incomplete, an
// error when the bytes cannot be a frame (bad magic, over the cap).
struct SideFrameView {
  std::uint16_t type = 0;
  std::span<const std::uint8_t> payload;
  std::size_t bytes = 0;  // header and payload
};
Result<std::optional<SideFrameView>> next_side_frame(std::span<const std::uint8_t> in);
// A frame of `type` around `payload`.
std::vector<std::uint8_t> make_side_frame(SideFrame type, std::span<const std::uint8_t> payload);
// What an authenticated frame's tag covers: its type and payload.
std::vector<std::uint8_t> side_frame_tagged_bytes(std::uint16_t type, std::span<const std::uint8_t> payload);
// A kNotify payload: (sender name, message).
Result<std::pair<std::string, std::string>> parse_notify_payload(std::span<const std::uint8_t> payload);

struct SideChannelHandlers {
  // Our metadata, encoded.
  std::function<Result<std::vector<std::uint8_t>>()> local_metadata;
  // A peer pushed its metadata. Returns the answer, or nullopt when it comes later: then
  // `later` is called exactly once, from any thread (e.g. once the agent has asked the
  // predecessor loaded under that name whether it is still there). The connection sends
  // nothing else meanwhile, and the reply (our metadata or the error) follows `later`.
  using Later = std::function<void(Status)>;
  std::function<std::optional<Status>(std::span<const std::uint8_t>, Later later)> load_remote;
  std::function<Status(std::string from, std::string message)> notify;
};

class SideChannelServer {
 public:
  // Serves on `reactor` (the agent's); null: on a reactor of its own (tests).
  static Result<std::unique_ptr<SideChannelServer>> start(const std::string& address, std::uint16_t port,
                                                          SideChannelHandlers handlers,
                                                          std::chrono::milliseconds idle_timeout,
                                                          std::shared_ptr<const SharedSecret> secret = nullptr,
                                                          std::shared_ptr<Reactor> reactor = nullptr);
  // Ends every watch and timer of the server and closes every connection; no handler
  // runs afterwards.
  ~SideChannelServer();
  std::uint16_t port() const { return port_; }

 private:
  struct Connection;
  using Connections = std::list<Connection>;  // oldest first
  SideChannelServer();

  // Reactor thread only below.
  Status watch_listener();
  void on_accept();
  void on_event(Connection* c, std::uint32_t events);
  void sweep();
  void drop(Connection* c);
  // Serves the complete frames in c's buffer while no reply is pending; false: drop c.
  bool serve(Connection& c);
  // The reply for one frame (empty: drop the connection, unless `pending`: the reply
  // comes through resume()); `refused`: close after sending.
  std::vector<std::uint8_t> answer(Connection& c, const SideFrameView& frame, bool& refused, bool& pending);
  // The reply of a kFetch after its push was loaded (or not): ours or the error, tagged.
  std::vector<std::uint8_t> fetch_reply(Connection& c, const Status& loaded);
  // The tag of an authenticated reply, appended; the next sequence number.
  void seal(Connection& c, std::vector<std::uint8_t>& reply);
  // A deferred push concluded: c's reply goes out and c serves on. Unknown serial: c
  // was dropped meanwhile.
  void resume(std::uint64_t serial, const Status& loaded);
  // Sends what it can of c's reply; false: drop c.
  bool flush(Connection& c);
  void want(Connection& c, std::uint32_t events);

  UniqueFd listener_;
  std::uint16_t port_ = 0;
  SideChannelHandlers handlers_;
  std::chrono::milliseconds idle_timeout_{5000};
  std::shared_ptr<const SharedSecret> secret_;  // null: no authentication
  std::shared_ptr<Reactor> reactor_;
  Reactor::Id listener_watch_ = 0;
  Reactor::Id sweep_ = 0;
  Reactor::Id resume_ = 0;  // the accept back-off's end
  std::size_t max_connections_ = 0;
  std::unique_ptr<Connections> conns_;
  std::vector<std::uint8_t> buf_;  // receive buffer
  std::uint64_t next_serial_ = 1;
  // False once the server is stopping: a late `later` finds no server (reactor thread).
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// The client's half of one request and its reply, without I/O: what to send, and what a
// received frame means. Shared by the blocking call below and the reactor's call
// (core/side_channel_probe.h), so both speak the same protocol.
class SideCallExchange {
 public:
  SideCallExchange(SideFrame type, std::span<const std::uint8_t> payload, SideFrame expect,
                   std::shared_ptr<const SharedSecret> secret, std::string where);
  ~SideCallExchange();
  // The frame to send now (the hello, or the request); empty when nothing is due.
  std::vector<std::uint8_t> take_output();
  // The next frame received (untrusted): nullopt when the exchange goes on (take_output
  // has the next frame), else its result: the reply's payload or why not.
  std::optional<Result<std::vector<std::uint8_t>>> on_frame(std::uint16_t type, std::span<const std::uint8_t> body);
  const std::string& where() const { return where_; }

 private:
  SideFrame type_;
  std::vector<std::uint8_t> payload_;
  SideFrame expect_;
  std::string where_;
  std::unique_ptr<InitiatorAuth> auth_;
  bool challenged_ = false;
  std::vector<std::uint8_t> out_;
};

// Client side: one request, one reply, within the deadline; authenticated (both ways)
// when `secret` is set. Blocks the calling thread: never call it on a reactor thread.
Result<std::vector<std::uint8_t>> side_channel_call(const std::string& host, std::uint16_t port, SideFrame type,
                                                    std::span<const std::uint8_t> payload, SideFrame expect,
                                                    Deadline deadline,
                                                    const std::shared_ptr<const SharedSecret>& secret = nullptr);

}  // namespace kvferry::detail
