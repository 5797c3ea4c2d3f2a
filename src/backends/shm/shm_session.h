// ShmSession: an initiator's link to one same-host target. It maps the target's shared
// regions once (memfds received over the Unix socket), copies with memcpy (or
// process_vm_readv/writev for target memory that was not allocated as shared memory),
// and sends notifications through the shared ring, completing a job with a notification
// when the target acknowledges it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "backends/shm/copy_pool.h"
#include "backends/shm/shm_ring.h"
#include "core/backend.h"
#include "core/peer_auth.h"
#include "core/process_watch.h"
#include "core/socket_util.h"

namespace kvferry::detail::shm {

struct SessionConfig {
  std::string agent_name;
  std::chrono::milliseconds peer_timeout{5000};
  std::uint64_t inline_bytes = 256u << 10;  // copied on the posting thread
  std::uint64_t slice_bytes = 1u << 20;     // largest unit of work for the copy pool
  CopyPool* pool = nullptr;
  std::shared_ptr<const SharedSecret> secret;  // null: no authentication
};

struct MappedRegion {
  std::uint64_t id = 0;
  std::uint64_t remote = 0;  // the target's address
  std::uint64_t length = 0;
  std::uint8_t* local = nullptr;  // our mapping; null: reached through process_vm_*
  void* map_base = nullptr;       // what to munmap
  std::size_t map_length = 0;
  bool live = false;     // announced by the peer when we connected
  bool revoked = false;  // deregistered by the peer (or not live when we connected)
};

class ShmSession : public std::enable_shared_from_this<ShmSession> {
 public:
  ShmSession(SessionConfig cfg, std::string peer, pid_t pid, UniqueFd sock, ControlBlock* cb,
             UniqueFd target_wake, std::vector<MappedRegion> regions);
  ~ShmSession();

  Status post(const std::shared_ptr<TransferJob>& job);
  void cancel(const std::shared_ptr<TransferJob>& job);
  Status notify(std::string_view message);
  Status health() const;

  // For the progress thread (and spinning waiters): take acknowledgements.
  void poll_acks();
  void check_deadlines();
  void on_revoke(std::uint64_t region_id);  // the caller then sends the ack
  void fail(const Status& why);
  int socket_fd() const { return sock_.get(); }
  bool dead() const { return dead_.load(std::memory_order_acquire); }
  bool awaiting_acks();
  void set_sleeping(bool sleeping);
  ControlBlock* control() const { return cb_; }

 private:
  struct Slice {
    std::uint8_t* local;
    std::uint64_t remote;  // mapped pointer, or the target's address for process_vm_*
    std::uint64_t length;
    std::uint32_t region;  // index in regions_
  };
  Status copy_slices(TransferOp op, const std::vector<Slice>& slices, std::size_t begin, std::size_t end, bool stream);
  // Strided pieces [begin, end), translated as they are copied (one slice each).
  // `stream`: streaming stores (stream_copy.h), fenced at the end of the batch.
  Status copy_pieces(TransferOp op, const PieceList& pieces, std::size_t begin, std::size_t end, bool stream);
  Status start_copy(const std::shared_ptr<TransferJob>& job, std::shared_ptr<CopyWork> work);
  void complete(const std::shared_ptr<TransferJob>& job, Status status);
  Status push_notify(std::uint64_t req, std::string_view message);

  const SessionConfig cfg_;
  const std::string peer_;
  const pid_t pid_;
  UniqueFd sock_;
  ControlBlock* cb_;
  UniqueFd target_wake_;
  ProcessWatch peer_process_;  // a completion is reported only while the peer lives

  std::shared_mutex map_mu_;  // copies hold it shared; a revoke takes it exclusively
  std::vector<MappedRegion> regions_;  // sorted by remote address; fixed after connect

  std::mutex produce_mu_;  // single producer of cb_->to_target
  std::mutex consume_mu_;  // single consumer of cb_->to_initiator

  struct Awaiting {
    std::shared_ptr<TransferJob> job;
    Clock::time_point deadline;
  };
  std::mutex jobs_mu_;
  std::uint64_t next_req_ = 1;
  std::unordered_map<std::uint64_t, Awaiting> awaiting_;
  std::unordered_map<const TransferJob*, std::shared_ptr<CopyWork>> copying_;

  mutable std::mutex status_mu_;
  Status lost_;
  std::atomic<bool> dead_{false};
};

}  // namespace kvferry::detail::shm
