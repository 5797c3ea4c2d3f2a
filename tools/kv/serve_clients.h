// serve_clients.h — what `kvferry serve` knows of its clients, driven by the
// notifications in its agent's inbox (kv_messages.h). The server never takes part in
// a transfer: clients read its pool one-sidedly. It checks each client's pool at its
// hello (refusing a mismatch, naming the fields), counts the steps whose every
// transfer has announced itself done, and forgets a client shortly after its last step
// or after a long silence, so a server that runs for weeks does not accumulate peers.
// Not thread-safe: the server's main loop owns it.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "kvferry/kvferry.h"

namespace kvferry::cli {

class ServeClients {
 public:
  ServeClients(Agent& agent, const KvLayout& ours, bool json, std::chrono::seconds idle_limit)
      : agent_(agent), ours_(ours), json_(json), idle_limit_(idle_limit) {}

  void handle(const Notification& notification);
  // Forgets clients that finished a few seconds ago (the acknowledgement of their last
  // transfer may still be on its way when its notification arrives) and clients
  // silent for longer than the idle limit.
  void sweep();
  // A client left the metadata service (it shut down, or died and its lease ran out).
  void left(const std::string& name);

  std::uint64_t clients_welcomed() const { return welcomed_; }
  std::uint64_t clients_refused() const { return refused_; }
  std::uint64_t steps_served() const { return steps_; }
  std::uint64_t bytes_served() const { return bytes_; }
  std::size_t clients_now() const { return clients_.size(); }

 private:
  struct Client {
    std::uint64_t step = 0;  // the step whose parts are being counted
    std::uint32_t parts_seen = 0;
    std::uint64_t step_bytes = 0;
    std::uint64_t steps_done = 0;
    std::uint64_t bytes = 0;
    std::chrono::steady_clock::time_point last_seen;
    bool finished = false;  // its last step is in; forgotten after a grace period
  };

  void hello(const std::string& from);
  void pulled(const std::string& from, const nlohmann::json& body);
  void forget(const std::string& from);
  // One line of output: human text, or a JSON object {"event": ..., fields}.
  void log(const std::string& event, const std::string& client, const std::string& text,
           const std::string& json_fields = {});

  Agent& agent_;
  KvLayout ours_;
  bool json_;
  std::chrono::seconds idle_limit_;
  std::map<std::string, Client> clients_;
  std::uint64_t welcomed_ = 0;
  std::uint64_t refused_ = 0;
  std::uint64_t steps_ = 0;
  std::uint64_t bytes_ = 0;
};

}  // namespace kvferry::cli
