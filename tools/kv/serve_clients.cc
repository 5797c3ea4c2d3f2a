#include "kv/serve_clients.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "kv/kv_messages.h"

namespace kvferry::cli {

namespace {
constexpr std::chrono::seconds kJoinGrace{3};
}  // namespace

void ServeClients::handle(const Notification& n) {
  Result<ControlMessage> message = parse_kv_message(n.message);
  if (message.ok() && message->type == ControlType::kKvHello) return hello(n.from);
  if (message.ok() && message->type == ControlType::kKvPulled) return pulled(n.from, message->body);
  log("ignored", n.from,
      "ignoring a notification of " + std::to_string(n.message.size()) + " bytes: " +
          (message.ok() ? "a " + control_type_name(static_cast<std::uint32_t>(message->type)) + " message"
                        : message.status().message()));
}

void ServeClients::hello(const std::string& from) {
  Result<KvPool> theirs = remote_kv_pool(agent_, from);
  // Through a metadata service the client's hello can overtake its entry: give the
  // watch a moment to load it.
  const auto until = std::chrono::steady_clock::now() + kJoinGrace;
  while (!theirs.ok() && theirs.status().code() == StatusCode::kNotFound &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    theirs = remote_kv_pool(agent_, from);
  }
  Status status = theirs.ok() ? check_kv_compatible(ours_, theirs->layout(), from) : theirs.status();
  if (!status.ok()) {
    ++refused_;
    log("refused", from, "refused: " + status.message(),
        ",\"reason\":" + nlohmann::json(status.message()).dump());
    // Best effort: the client checks the geometry itself too and gives up on a timeout.
    (void)agent_.notify(from, format_kv_refused(status.message()));
    Client& refused = clients_[from];  // forgotten after the grace period, once the refusal is out
    refused.last_seen = std::chrono::steady_clock::now();
    refused.finished = true;
    return;
  }
  ++welcomed_;
  clients_[from].last_seen = std::chrono::steady_clock::now();
  log("welcome", from, "welcome (its pool: " + theirs->layout().describe() + ")");
  if (Status sent = agent_.notify(from, format_kv_welcome()); !sent.ok()) {
    log("lost", from, "could not answer its hello: " + sent.to_string());
    forget(from);
  }
}

void ServeClients::pulled(const std::string& from, const nlohmann::json& body) {
  const Result<KvPulledMessage> parsed = parse_pulled(body);
  auto it = clients_.find(from);
  if (!parsed.ok() || it == clients_.end() || it->second.finished) {
    log("ignored", from,
        "ignoring a kv.pulled message: " +
            (parsed.ok() ? std::string("from a client that never said hello") : parsed.status().message()));
    return;
  }
  Client& c = it->second;
  c.last_seen = std::chrono::steady_clock::now();
  if (parsed->step != c.step || c.parts_seen == 0) {  // parts of a new step (an abandoned one is dropped)
    c.step = parsed->step;
    c.parts_seen = 0;
    c.step_bytes = 0;
  }
  ++c.parts_seen;
  c.step_bytes += parsed->bytes;
  if (c.parts_seen < parsed->parts) return;
  ++c.steps_done;
  c.bytes += c.step_bytes;
  ++steps_;
  bytes_ += c.step_bytes;
  c.parts_seen = 0;
  if (!parsed->last) return;
  log("done", from,
      "done: " + std::to_string(c.steps_done) + " steps, " + std::to_string(c.bytes) + " bytes pulled",
      ",\"steps\":" + std::to_string(c.steps_done) + ",\"bytes\":" + std::to_string(c.bytes));
  c.finished = true;
}

void ServeClients::left(const std::string& name) {
  auto it = clients_.find(name);
  if (it == clients_.end()) return;
  if (!it->second.finished) log("left", name, "left the metadata service before it finished");
  clients_.erase(it);
}

void ServeClients::sweep() {
  constexpr std::chrono::seconds kFinishedGrace{5};
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::string> finished, silent;
  for (const auto& [name, client] : clients_) {
    if (client.finished && now - client.last_seen > kFinishedGrace) finished.push_back(name);
    if (!client.finished && now - client.last_seen > idle_limit_) silent.push_back(name);
  }
  for (const std::string& name : finished) forget(name);
  for (const std::string& name : silent) {
    log("idle", name, "silent for " + std::to_string(idle_limit_.count()) + " s; forgotten");
    forget(name);
  }
}

void ServeClients::forget(const std::string& from) {
  clients_.erase(from);
  (void)agent_.forget_remote(from);  // NotFound when it was never loaded: nothing to undo
}

void ServeClients::log(const std::string& event, const std::string& client, const std::string& text,
                       const std::string& json_fields) {
  if (json_) {
    std::printf("{\"event\":\"%s\",\"client\":%s%s}\n", event.c_str(), nlohmann::json(client).dump().c_str(),
                json_fields.c_str());
  } else {
    std::printf("kvferry serve: client %s: %s\n", client.c_str(), text.c_str());
  }
  std::fflush(stdout);
}

}  // namespace kvferry::cli
