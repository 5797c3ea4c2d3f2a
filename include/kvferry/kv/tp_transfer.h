// kvferry/kv/tp_transfer.h — a request's KV cache from a prefill engine's tensor-parallel
// ranks to a decode engine's ranks when the two TP degrees differ (prefill P, decode D).
//
// Roles: every prefill rank runs one TpSender on its Agent, every decode rank one
// TpReceiver. The flow is a push (as SGLang does it):
//  1. `create` publishes the rank in the Agent's metadata (entry "kv.tp": role, TP size,
//     rank, the model's kv_heads, a per-instance id) besides the pool ("kv.pool"), so
//     create both before peers load the metadata. Each decode agent then loads every
//     prefill agent's metadata and each prefill agent every decode agent's
//     (Agent::fetch_remote with push_local does both), and the receiver is connected to
//     the prefill agents by name: it learns their ranks from their entries.
//  2. Decode rank: `expect(request, block table, tokens)` picks the path, takes a staging
//     slot where the path needs one, and asks each prefill rank it reads (tp_mapping.h)
//     for its share, by Agent::notify (request id, heads, where to write).
//  3. Prefill rank: `send(request, block table, first token, tokens, last)` once per
//     prefill chunk. For every decode rank that asked, the sender's threads gather the
//     share's heads (kv_head_copy.h) into a staging slot and write it as ONE descriptor
//     (host or device staging), or write head-slice descriptors straight into the decode
//     pool (direct). Large chunks go in pieces that fit a slot, so gathers overlap writes.
//     Each write carries a notification (request, tokens, heads, sender instance) that the
//     Agent delivers after its bytes have landed.
//  4. Decode rank: `progress()` scatters each landed piece into the pool at its tokens.
//     A request is complete when every sender's share covers every token. Senders are
//     counted by agent (name and instance id), never by rank number.
//
// Paths (TpPath): host staging (staging in host memory, pinned for GPU pools, moved by a
// host backend such as tcp or shm), device staging (staging on the GPUs, moved by a
// backend that joins two GPUs such as cuda_ipc), direct (no staging: one descriptor per
// block and head range where both pools keep a head's tokens together (vllm-hnd), else
// per token; for host pools of one family (vllm-hnd with one block size; vllm-nhd and
// sglang token slots; mla) these go as one strided transfer per piece, lanes x blocks or
// token slots, with no per-descriptor work on either side). kAuto picks by a cost
// estimate (tp_path_estimate below); any path can be forced. Staging memory comes from bounded StagingSlots arenas (staging_slots.h): a
// sender waits for a free slot (back-pressure), a receiver's expect() waits up to
// `slot_timeout` for one and then fails with Timeout.
//
// Contract
// - Threading: every public method is thread-safe (one internal lock per object).
//   A receiver is driven by the caller: `progress()`, or `wait()` which calls it. A
//   sender runs on threads of its own from create() to its destruction: one takes the
//   asks as they arrive, one per decode rank it feeds gathers and posts that rank's
//   pieces (so the decode ranks are served at once and a gather overlaps the previous
//   write), one reaps finished writes; its `progress()` only reports new errors, and
//   calling it is optional.
// - The object takes over the Agent's notification inbox (a sender from create() on, a
//   receiver whenever it progresses): notifications that are not its own are kept and
//   handed out by `take_other_notifications()`. One TP endpoint (sender or receiver)
//   per Agent.
// - Lifetime: the Agent must outlive the object; the pool must stay registered with it.
//   Destroying the object cancels its transfers in flight and deregisters its staging;
//   after that it touches no memory of the caller's.
// - Block tables passed to send() / expect() are copied; the blocks must hold the
//   request's data (send) or stay reserved for it (expect) until wait() has returned.
// - Failures: a sender that dies or stops answering turns every request waiting on it
//   into kPeerLost naming it, within `peer_timeout` (the receiver probes its senders with
//   8-byte reads while it waits on them). wait() that runs out of time returns Timeout
//   naming every sender still missing and how many of its tokens landed. Bad input is
//   InvalidArgument naming the value; messages from peers are bounds-checked.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvferry/agent.h"
#include "kvferry/kv/kv_pool.h"
#include "kvferry/kv/staging_slots.h"
#include "kvferry/kv/tp_mapping.h"
#include "kvferry/status.h"

namespace kvferry {

// The metadata key of a rank's TP entry.
inline constexpr std::string_view kKvTpMetadataKey = "kv.tp";

enum class TpPath : std::uint8_t { kAuto = 0, kHostStaging = 1, kDeviceStaging = 2, kDirect = 3 };
// "auto", "host", "device", "direct".
std::string_view to_string(TpPath path) noexcept;
bool parse_tp_path(std::string_view text, TpPath* out) noexcept;

// The model and the two TP groups; both sides must agree (checked on every request).
struct TpGroups {
  std::uint32_t kv_heads = 0;  // the model's KV heads (1 with mla)
  std::uint32_t prefill_tp = 1;
  std::uint32_t decode_tp = 1;
  bool mla = false;
};

// Staging arenas of one object: host (dram, pinned when the pool is on a GPU) and device
// (vram on the pool's GPU, only for a GPU pool), made and registered with the Agent at
// create: the pinning is paid once, and a receiver's staging is in the metadata peers load.
struct TpStagingOptions {
  std::uint64_t slot_bytes = 16ull << 20;
  std::uint32_t host_slots = 8;
  std::uint32_t device_slots = 8;
  // GPU pools, host staging: the head kernels gather into a free device slot, then one
  // copy moves it to pinned memory (and the reverse before a scatter); measured on H200
  // 0.985 of a pinned copy against 0.945 for kernels reaching pinned memory over the bus.
  // With no device slot free at that moment, or false here, the kernels use pinned memory.
  bool host_via_device = true;
};

struct TpSenderOptions {
  TpGroups groups;
  std::uint32_t rank = 0;  // this prefill rank
  // Device staging (vram) gets 32 slots (512 MiB on the pool's GPU): room for the large
  // pieces below, two of them in flight.
  TpStagingOptions staging{16ull << 20, 8, 32, true};
  // Largest piece written at once; a chunk is cut into even pieces of at most this many
  // bytes (and at most the staging arena). Smaller pieces overlap gather and write more.
  std::uint64_t piece_bytes = 16ull << 20;
  // The same for device staging: every piece pays a gather launch, a transfer, a
  // notification and a scatter on the receiver, a fixed cost of the order of 0.1-0.4 ms,
  // while a GPU link moves 16 MiB in about 0.04 ms; so device pieces are far larger.
  std::uint64_t device_piece_bytes = 256ull << 20;
  // Backend for the data writes; empty lets the Agent pick the cheapest.
  std::string backend;
  // Benchmarks only: the direct path with the plan engines build by hand, one descriptor
  // per (block, layer, K/V, head) (per token where a head's tokens are not adjacent),
  // none merged. `kvferry bench --tp` measures what the other paths save against it.
  bool naive_direct_plan = false;
};

struct TpReceiverOptions {
  TpGroups groups;
  std::uint32_t rank = 0;  // this decode rank
  TpPath path = TpPath::kAuto;
  // Receiver staging holds a whole request: at least its bytes per slot run. Made and
  // registered at create (senders write into it): host memory always (pinned for a GPU
  // pool), GPU memory too for a GPU pool.
  TpStagingOptions staging{64ull << 20, 8, 8, true};
  std::chrono::milliseconds slot_timeout{5000};
  // A sender whose liveness probe fails or stays unanswered this long is lost.
  std::chrono::milliseconds peer_timeout{5000};
};

// What a finished (or failed) request of a receiver did.
struct TpReceiveReport {
  TpPath path = TpPath::kAuto;      // the path used (never kAuto)
  std::uint32_t sources = 0;        // senders counted
  std::uint64_t bytes = 0;          // KV bytes landed (all senders)
  std::uint64_t pieces = 0;         // writes landed
  std::uint64_t elapsed_ns = 0;     // expect() to the last piece scattered
  std::uint64_t scatter_ns = 0;     // time spent scattering
};

// The estimate kAuto uses: seconds to move `bytes` in `descriptors` descriptors directly,
// versus gather + one descriptor per share + scatter. Exposed so tools print it.
// Its rules: the bytes cross the link on both paths, so only what differs is compared.
// - Staging: two passes over the bytes (gather and scatter: 8 GB/s on host memory,
//   1.5 TB/s on a GPU), a fixed wake-up per pass, one descriptor per share.
// - Direct: per descriptor, or per piece of the strided form (host pools of one family,
//   tp_head_lanes): 1 us per GPU copy descriptor; on host memory 0.3 us per descriptor
//   and 0.02 us per strided piece, plus what a backend adds per piece whatever its
//   form: tcp 0.15 us (the kernel copies each piece as its own iovec at a row stride).
// - `host_backend` is the backend that moves host bytes between the two agents (the
//   receiver learns it from the Agent's route to each sender, see TpReceiver::connect);
//   empty counts as a backend that copies pieces in memory. Figures from the 2-core VM
//   and the H200 machine (docs/benchmarks.md, "Heterogeneous TP").
struct TpPathEstimate {
  TpPath path = TpPath::kDirect;
  std::uint64_t direct_descriptors = 0;
  double direct_seconds = 0;
  double staging_seconds = 0;
};
// `source` is one prefill rank's pool, `destination` the decode rank's; `tokens` of the
// request, `shares` shares read by the decode rank.
TpPathEstimate tp_path_estimate(const KvLayout& source, const KvLayout& destination, MemoryKind kind,
                                std::uint64_t tokens, std::uint32_t heads, std::uint32_t shares,
                                std::string_view host_backend = {});
// Descriptors of the direct path for one share of `heads` heads over `tokens` tokens
// (merged where both pools keep the bytes adjacent).
std::uint64_t tp_direct_descriptors(const KvLayout& source, const KvLayout& destination, std::uint64_t tokens,
                                    std::uint32_t heads);

class TpSender {
 public:
  // `pool`: this rank's KV pool (its heads only), registered with `agent`. Publishes the
  // "kv.tp" and "kv.pool" entries; do this before peers fetch our metadata.
  static Result<std::unique_ptr<TpSender>> create(Agent& agent, const KvPool& pool, TpSenderOptions options);
  ~TpSender();
  TpSender(const TpSender&) = delete;
  TpSender& operator=(const TpSender&) = delete;

  // Tokens [first_token, first_token + tokens) of `request` are computed: send them to
  // every decode rank that reads this rank. `block_table` is the request's whole block
  // table so far (token t in block_table[t / block_tokens]). `last` marks the final chunk.
  // Chunks must not overlap; they may come in any order.
  Status send(std::string_view request, std::span<const std::uint32_t> block_table, std::uint64_t first_token,
              std::uint64_t tokens, bool last);
  // Takes the notifications waiting now (the sender's listener does so too) and returns
  // the first new error of a request (also kept for wait()).
  Status progress();
  // Blocks until every chunk of `request` has landed at every decode rank that reads
  // this rank (their writes done), or an error, or Timeout naming the decode ranks whose
  // ask never came or whose writes are still pending. Forgets the request after.
  Status wait(std::string_view request, std::chrono::milliseconds timeout);
  std::vector<Notification> take_other_notifications();

  class Impl;

 private:
  explicit TpSender(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class TpReceiver {
 public:
  // `pool`: this decode rank's KV pool, registered with `agent`. Publishes our "kv.tp"
  // and "kv.pool" entries.
  static Result<std::unique_ptr<TpReceiver>> create(Agent& agent, const KvPool& pool, TpReceiverOptions options);
  ~TpReceiver();
  TpReceiver(const TpReceiver&) = delete;
  TpReceiver& operator=(const TpReceiver&) = delete;

  // `prefill_peers`: the prefill agents (their metadata loaded); each must have published
  // a "kv.tp" entry, every rank this decode rank reads among them once. Once, before
  // the first expect(). Checks that their pools hold the same model, and reads 8 bytes
  // from each sender (bounded by peer_timeout): the backend the Agent routes host bytes
  // with it through is what kAuto's estimate counts (a sender that forces
  // TpSenderOptions::backend otherwise is not known to it).
  Status connect(const std::vector<std::string>& prefill_peers);
  // Asks every prefill rank this rank reads for `request`'s `tokens` tokens, to land in
  // our blocks `block_table`. `path` overrides the options' path for this request.
  Status expect(std::string_view request, std::span<const std::uint32_t> block_table, std::uint64_t tokens,
                TpPath path = TpPath::kAuto);
  Status progress();
  // OK once complete; the request's error; or Timeout naming the missing senders. The
  // request is forgotten after OK or an error (its report is returned by last_report()).
  Status wait(std::string_view request, std::chrono::milliseconds timeout);
  // The report of the last request wait() finished (OK or error).
  TpReceiveReport last_report() const;
  // The senders this rank counts: "name (rank p, heads [a, b))".
  std::vector<std::string> describe_sources() const;
  std::vector<Notification> take_other_notifications();

  class Impl;

 private:
  explicit TpReceiver(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvferry
