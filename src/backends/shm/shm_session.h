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
#include "core/host_sessions.h"
#include "core/peer_auth.h"
#include "core/peer_session.h"
#include "core/region_table.h"
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

// How we reach one of the target's regions (the table's RegionInfo has its id and the
// target's address and length).
struct Mapping {
  std::uint8_t* local = nullptr;  // our mapping; null: reached through process_vm_*
  void* map_base = nullptr;       // what to munmap
  std::size_t map_length = 0;
  bool live = false;     // announced by the peer when we connected
  bool revoked = false;  // deregistered by the peer (or not live when we connected)
};
// The target's regions by address; fixed after connect (entries never move).
using PeerRegions = RegionTable<Mapping>;

class ShmSession : public std::enable_shared_from_this<ShmSession> {
 public:
  ShmSession(SessionConfig cfg, std::string peer, pid_t pid, UniqueFd sock, ControlBlock* cb,
             UniqueFd target_wake, PeerRegions regions);
  ~ShmSession();

  Status post(const std::shared_ptr<TransferJob>& job);
  void cancel(const std::shared_ptr<TransferJob>& job);
  Status notify(std::string_view message);
  Status health() const { return peer_session_.health(); }

  // For the progress thread (and spinning waiters): take acknowledgements.
  void poll_acks();
  void check_deadlines() { peer_session_.check_deadlines(); }
  void on_revoke(std::uint64_t region_id);  // the caller then sends the ack
  // Copies in flight finish into mappings that stay valid until we are destroyed, then
  // report the loss from complete().
  void fail(const Status& why) { peer_session_.fail(why); }
  int socket_fd() const { return sock_.get(); }
  bool dead() const { return peer_session_.dead(); }
  bool awaiting_acks() const { return peer_session_.awaiting(); }
  void set_sleeping(bool sleeping);
  ControlBlock* control() const { return cb_; }
  // The reactor's watch of our socket (core/host_sessions.h); it ends before the socket closes.
  void join(HostSessions::Membership m) { membership_ = std::move(m); }

 private:
  struct Slice {
    std::uint8_t* local;
    std::uint64_t remote;  // mapped pointer, or the target's address for process_vm_*
    std::uint64_t length;
    const PeerRegions::Entry* region;
  };
  Status copy_slices(TransferOp op, const std::vector<Slice>& slices, std::size_t begin, std::size_t end, bool stream);
  // Strided pieces [begin, end), translated as they are copied (one slice each).
  // `stream`: streaming stores (stream_copy.h), fenced at the end of the batch.
  Status copy_pieces(TransferOp op, const PieceList& pieces, std::size_t begin, std::size_t end, bool stream);
  Status start_copy(const std::shared_ptr<TransferJob>& job, std::shared_ptr<CopyWork> work);
  void complete(const std::shared_ptr<TransferJob>& job, Status status);
  Status push_notify(std::uint64_t req, std::string_view message);

  const SessionConfig cfg_;
  // Health, notification acknowledgements (ids, deadlines), peer loss: the core's part.
  PeerSession peer_session_;
  const pid_t pid_;
  UniqueFd sock_;
  ControlBlock* cb_;
  UniqueFd target_wake_;

  std::shared_mutex map_mu_;  // copies hold it shared; a revoke takes it exclusively
  PeerRegions regions_;

  std::mutex produce_mu_;  // single producer of cb_->to_target
  std::mutex consume_mu_;  // single consumer of cb_->to_initiator

  std::mutex jobs_mu_;
  std::unordered_map<const TransferJob*, std::shared_ptr<CopyWork>> copying_;
  HostSessions::Membership membership_;  // last: destroyed first, before sock_ closes
};

}  // namespace kvferry::detail::shm
