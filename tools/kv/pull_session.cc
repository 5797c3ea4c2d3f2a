#include "kv/pull_session.h"

#include <chrono>
#include <numeric>

#include "common/agent_factory.h"
#include "common/backend_traits.h"
#include "common/block_pattern.h"
#include "common/cli_util.h"
#include "kv/kv_agent.h"
#include "kv/kv_host_pool.h"
#include "kv/kv_messages.h"

namespace kvferry::cli {
namespace {

constexpr std::chrono::seconds kFetchLimit{10};
constexpr std::chrono::seconds kVerdictLimit{10};

BlockPattern pattern_of(const PullOptions& o) {
  return o.pattern == "contiguous" ? BlockPattern::kContiguous : BlockPattern::kScattered;
}

// Layers split into `parts` nearly equal ranges, in order.
std::vector<LayerRange> split_layers(std::uint32_t layers, std::uint32_t parts) {
  std::vector<LayerRange> ranges;
  for (std::uint32_t k = 0; k < parts; ++k) {
    const std::uint32_t first = static_cast<std::uint32_t>(std::uint64_t{layers} * k / parts);
    const std::uint32_t end = static_cast<std::uint32_t>(std::uint64_t{layers} * (k + 1) / parts);
    ranges.push_back(LayerRange{first, end - first});
  }
  return ranges;
}

double micros_since(Clock::time_point start) { return to_micros(Clock::now() - start); }

}  // namespace

PullSession::PullSession(const PullOptions& options, const KvLayout& layout, std::uint32_t blocks)
    : options_(options),
      layout_(layout),
      blocks_(blocks),
      cached_blocks_(static_cast<std::uint32_t>(
          std::min<std::uint64_t>(options.cached_tokens / layout.geometry().block_tokens, blocks))),
      allocator_(layout.blocks(), pattern_of(options), mix64(options.seed ^ 0xA11C)) {}

Result<std::unique_ptr<PullSession>> PullSession::connect(const PullOptions& o) {
  KVF_ASSIGN_OR_RETURN(KvLayout layout, o.pool.layout());
  const bool via_service = !o.cluster.metadata.empty();
  const auto where = parse_host_port(o.peer);
  if (!via_service && !where) return InvalidArgument("--peer '" + o.peer + "': expected HOST:PORT");
  const std::uint32_t blocks = layout.blocks_for_tokens(o.tokens);
  if (blocks > layout.blocks()) {
    return InvalidArgument(std::to_string(o.tokens) + " tokens need " + std::to_string(blocks) +
                           " blocks per layer; this client's pool holds " + std::to_string(layout.blocks()) +
                           " (raise --pool-size)");
  }
  if (o.cached_tokens >= o.tokens)
    return InvalidArgument("--cached-tokens must be below --tokens: nothing to pull");
  if (o.transfers > layout.geometry().layers) {
    return InvalidArgument("--transfers " + std::to_string(o.transfers) + " exceeds the " +
                           std::to_string(layout.geometry().layers) +
                           " layers (each transfer moves whole layers)");
  }
  std::unique_ptr<PullSession> session(new PullSession(o, layout, blocks));
  KVF_ASSIGN_OR_RETURN(session->agent_, make_kv_agent(unique_agent_name("kv-pull"), {o.backend}, o.params,
                                                      std::chrono::milliseconds(o.peer_timeout_ms), o.cluster));
  KVF_ASSIGN_OR_RETURN(session->pool_,
                       allocate_kv_pool_memory(layout, o.memory, kKvPoisonByte,
                                               wants_shared_pool(o.backend) ? session->agent_.get() : nullptr));
  if (via_service) {
    KVF_RETURN_IF_ERROR(session->handshake_via_service());
  } else {
    KVF_RETURN_IF_ERROR(session->handshake(where->host, where->port));
  }
  session->parts_ = split_layers(layout.geometry().layers, o.transfers);
  session->plans_.resize(session->parts_.size());
  for (std::size_t k = 0; k < session->parts_.size(); ++k) {
    session->plans_[k].reserve(std::size_t{blocks} * session->parts_[k].count * layout.lanes_per_layer());
  }
  return session;
}

Status PullSession::handshake(const std::string& host, std::uint16_t port) {
  KVF_RETURN_IF_ERROR(
      agent_->register_memory(pool_->pool().tensor_regions()).with_context("registering our pool"));
  KVF_ASSIGN_OR_RETURN(LocalKvPool local, LocalKvPool::attach(*agent_, pool_->pool()));
  local_.emplace(std::move(local));
  Result<std::string> server = agent_->fetch_remote(host, port, /*push_local=*/true, kFetchLimit);
  if (!server.ok()) {
    return server.status().with_context("reaching the server at " + host + ":" + std::to_string(port) +
                                        " (is `kvferry serve` running there?)");
  }
  server_ = *server;
  return greet();
}

// Through the metadata service: the server is whoever's name starts with --server; it
// learns of us there too (our pool entry is published with our registration).
Status PullSession::handshake_via_service() {
  KVF_RETURN_IF_ERROR(
      agent_->register_memory(pool_->pool().tensor_regions()).with_context("registering our pool"));
  KVF_ASSIGN_OR_RETURN(LocalKvPool local, LocalKvPool::attach(*agent_, pool_->pool()));
  local_.emplace(std::move(local));
  Result<std::vector<std::string>> servers = agent_->wait_for_peers(options_.server, 1, kFetchLimit);
  if (!servers.ok()) {
    return servers.status().with_context("finding a server named '" + options_.server + "*' in " +
                                         options_.cluster.metadata + " (is `kvferry serve --metadata` running?)");
  }
  server_ = servers->front();
  KVF_RETURN_IF_ERROR(agent_->sync_metadata(kFetchLimit));  // the server looks for our pool there
  // A server seen at its very start may not have published its pool yet.
  const auto until = Clock::now() + kFetchLimit;
  while (!remote_kv_pool(*agent_, server_).ok() && Clock::now() < until) {
    agent_->wait_for_peer_events(std::chrono::milliseconds(50));
    (void)agent_->take_peer_events();
  }
  return greet();  // the server waits for our entry if our hello overtakes it

}

Status PullSession::greet() {  KVF_RETURN_IF_ERROR(
      agent_->notify(server_, format_kv_hello()).with_context("saying hello to the server"));
  Result<KvLink> link = local_->link(*agent_, server_);  // checks the server's pool against ours
  if (!link.ok()) {
    // Wait for the server's own verdict first: leaving at once could drop our hello
    // unsent, and the server's operator should see the refusal too.
    (void)wait_for_verdict();
    return link.status().with_context("refusing the server's KV pool");
  }
  link_.emplace(std::move(link).value());
  KVF_ASSIGN_OR_RETURN(bool welcomed, wait_for_verdict());
  if (!welcomed) return Timeout("server '" + server_ + "' did not answer our hello within 10 s");
  return Status::Ok();
}

// True on kKvWelcome, false on silence; a refusal is the server's error message.
Result<bool> PullSession::wait_for_verdict() {
  const auto deadline = Clock::now() + kVerdictLimit;
  while (Clock::now() < deadline) {
    agent_->wait_for_notifications(std::chrono::milliseconds(100));
    for (const Notification& n : agent_->take_notifications()) {
      if (n.from != server_) continue;
      Result<ControlMessage> message = parse_kv_message(n.message);
      if (!message.ok()) continue;  // not ours to answer: the verdict is what we wait for
      if (message->type == ControlType::kKvWelcome) return true;
      if (message->type == ControlType::kKvRefused) {
        Result<std::string> reason = refused_reason(message->body);
        return RemoteError("server '" + server_ + "' refused us: " +
                           (reason.ok() ? *reason : std::string("(no reason given)")));
      }
    }
  }
  return false;
}

std::vector<std::uint32_t> PullSession::server_blocks(int index, bool for_baseline) const {
  // The prefill's block table for this prompt: the head blocks when
  // contiguous, arbitrary ones otherwise; different for every step.
  const std::uint64_t salt = (for_baseline ? 0xBA5E000000ull : 0x5E7) + static_cast<std::uint64_t>(index);
  return choose_block_ids(pattern_of(options_), mix64(options_.seed ^ salt),
                          link_->remote_pool().layout().blocks(), blocks_);
}

Result<PullStep> PullSession::run_step(int index, bool last) {
  const std::vector<std::uint32_t> source_table = server_blocks(index);
  auto allocated = allocator_.allocate(blocks_);
  if (!allocated) return Internal("the client's block allocator ran dry");
  const std::vector<std::uint32_t>& destination_table = *allocated;
  const std::span<const std::uint32_t> source = std::span(source_table).subspan(cached_blocks_);
  const std::span<const std::uint32_t> destination = std::span(destination_table).subspan(cached_blocks_);
  KVF_RETURN_IF_ERROR(pool_->poison(destination));

  PullStep step;
  step.index = index;
  step.warmup = index < options_.warmup;
  const auto start = Clock::now();
  for (std::size_t k = 0; k < parts_.size(); ++k) {
    KVF_RETURN_IF_ERROR(link_->plan(TransferOp::kRead, {source, destination, parts_[k]}, plans_[k]));
  }
  step.plan_us = micros_since(start);
  const auto created_at = Clock::now();
  std::vector<TransferRequest> requests;
  requests.reserve(parts_.size());
  for (std::size_t k = 0; k < parts_.size(); ++k) {
    TransferOptions transfer;
    transfer.backend = options_.backend;
    transfer.notification =
        format_pulled({static_cast<std::uint64_t>(index), static_cast<std::uint32_t>(k + 1),
                       static_cast<std::uint32_t>(parts_.size()), plans_[k].bytes(), last});
    Result<TransferRequest> request = link_->create_transfer(*agent_, plans_[k], std::move(transfer));
    if (!request.ok()) {
      return request.status().with_context("creating transfer " + std::to_string(k + 1) + "/" +
                                           std::to_string(parts_.size()));
    }
    requests.push_back(std::move(request).value());
    step.pairs += plans_[k].pairs();
    step.merged_planned += plans_[k].merged_descriptors();
    step.bytes += plans_[k].bytes();
  }
  step.create_us = micros_since(created_at);
  const auto posted_at = Clock::now();
  for (TransferRequest& request : requests) KVF_RETURN_IF_ERROR(request.post().with_context("posting"));
  step.post_us = micros_since(posted_at);
  const auto deadline = start + std::chrono::seconds(options_.timeout_s);
  for (std::size_t k = 0; k < requests.size(); ++k) {
    const Status done = requests[k].wait(std::max(Clock::duration::zero(), deadline - Clock::now()));
    if (!done.ok()) {
      return done.with_context("transfer " + std::to_string(k + 1) + "/" + std::to_string(requests.size()));
    }  // returning destroys (cancels) the others
    step.merged += requests[k].telemetry().descriptors_merged;
  }
  const double seconds = to_seconds(Clock::now() - start);
  step.ms = seconds * 1e3;
  step.gbps = gigabytes_per_second(step.bytes, seconds);
  KVF_RETURN_IF_ERROR(verify(source, destination, step));
  allocator_.release(destination_table);
  return step;
}

Status PullSession::verify(std::span<const std::uint32_t> source, std::span<const std::uint32_t> destination,
                           PullStep& step) {
  KVF_ASSIGN_OR_RETURN(std::optional<std::string> bad, pool_->check(destination, source));
  step.verified = !bad;
  if (bad) step.verify_message = *bad;
  return Status::Ok();
}

}  // namespace kvferry::cli
