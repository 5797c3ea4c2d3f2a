// Which TcpEngine a handler on this thread is serving now (its engine_mu_ held): an engine
// call from inside a handler (a completion hook calling back) must not wait for the engine.
// Shared by the engine's files (tcp_engine.cc, tcp_engine_loop.cc).
#pragma once

namespace kvferry::detail::tcp {

class TcpEngine;

inline thread_local const TcpEngine* t_serving = nullptr;

struct Serving {
  explicit Serving(const TcpEngine* e) : prev(t_serving) { t_serving = e; }
  ~Serving() { t_serving = prev; }
  Serving(const Serving&) = delete;
  Serving& operator=(const Serving&) = delete;
  const TcpEngine* prev;
};

}  // namespace kvferry::detail::tcp
