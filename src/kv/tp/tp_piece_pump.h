// tp_piece_pump.h — the half of a TpSender that moves pieces: for every decode rank it
// feeds, one lane thread takes that rank's next piece (oldest request first), gathers it
// into a staging slot (host or device staging) or plans its head slices (direct), and
// posts the write with its notification; one reaper thread takes the writes' completions
// from a CompletionQueue, counts the landed tokens and returns the slots.
//
// Why threads: a prefill rank feeding several decode ranks gathers and posts for all of
// them at once (on the GPU each lane's gather runs on its own per-thread stream), the next
// gather of a rank overlaps the write of the previous one, and a finished write frees its
// slot and wakes the lanes and wait() at once (no polling).
//
// Threading: the lanes and the reaper take SendBook::mutex for every look at the book;
// gathers and transfer creation run outside it. `stop()` (also the destructor) ends the
// lanes, cancels what is in flight (after it returns no write touches the staging) and
// ends the reaper. The StagingArenas must be made before start() (lanes only look them up).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "kv/tp/tp_send_book.h"
#include "kv/tp/tp_staging.h"
#include "kvferry/agent.h"
#include "kvferry/completion_queue.h"
#include "kvferry/kv/tp_transfer.h"

namespace kvferry::tp {

// Tells `peer` that its ask for `ask.request` failed, and why (best effort).
void refuse(Agent& agent, std::uint64_t instance, const std::string& peer, const TpAsk& ask, const Status& why);

class PiecePump {
 public:
  PiecePump(Agent& agent, const KvPool& pool, const TpSenderOptions& options, std::uint64_t instance,
            StagingArenas& arenas, SendBook& book)
      : agent_(agent), pool_(pool), options_(options), instance_(instance), arenas_(arenas), book_(book) {}
  ~PiecePump() { stop(); }
  PiecePump(const PiecePump&) = delete;
  PiecePump& operator=(const PiecePump&) = delete;

  // One lane per decode rank in `readers`.
  Status start(const std::set<std::uint32_t>& readers);
  void stop();

  // Bytes per piece of `grant`'s path: the chunk is cut into even pieces under it.
  std::uint64_t piece_limit(const Grant& grant) const;

 private:
  struct InFlight {
    std::string request;
    std::uint32_t decode_rank = 0;
    Piece piece;
    StagingSlot slot;
    std::optional<TransferRequest> transfer;
  };
  struct Job {
    std::string request;
    std::uint32_t decode_rank = 0;
    Piece piece;
    std::vector<std::uint32_t> blocks;  // the request's table (send() may extend the book's)
    const Grant* grant = nullptr;       // stable: its in_flight count keeps it in the book
    StagingSlot slot;
  };
  enum class Take { kJob, kIdle, kFailed };

  void lane(std::uint32_t decode_rank);
  void reap();
  // Book lock held: the next piece of `decode_rank` that can go now, with its slot.
  Take take(std::uint32_t decode_rank, Job& job, Status& failure, SendRequest** failed);
  // No lock: gather (staging) or plan (direct), and create the write.
  Result<TransferRequest> build(Job& job, std::uint64_t tag);

  Agent& agent_;
  const KvPool& pool_;
  const TpSenderOptions& options_;
  const std::uint64_t instance_;
  StagingArenas& arenas_;
  SendBook& book_;
  std::optional<CompletionQueue> queue_;
  // Guarded by book_.mutex:
  std::map<std::uint64_t, InFlight> in_flight_;  // by tag
  std::map<std::uint32_t, std::uint32_t> lane_depth_;
  std::uint32_t busy_ = 0;  // pieces taken and not reaped (building or in flight)
  std::uint64_t next_tag_ = 1;
  bool reaper_stop_ = false;
  std::vector<std::thread> lanes_;
  std::thread reaper_;
};

}  // namespace kvferry::tp
