// CudaIpcSession: an initiator's link to one same-host target. It opens each of the
// target's IPC handles once per local GPU (cached, closed on revocation or when the
// session ends), turns a job's pieces into one submission per local GPU (copy kernel or
// cudaMemcpyBatchAsync, see copy_lane.h; a strided job, lanes x block runs, becomes one
// launch of the strided kernel over the lanes' bases and the runs, never an expanded
// table, so a fresh request costs what a re-post does), finishes the job when its CUDA events
// complete, and only then sends the notification, finishing the job when the target
// acknowledges it. A peer in this very process is reached without IPC (same pointers).
#pragma once

#include <atomic>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda/copy_lane.h"
#include "backends/cuda_ipc/cuda_ipc_wire.h"
#include "core/backend.h"
#include "core/host_sessions.h"
#include "core/peer_session.h"
#include "core/region_table.h"

namespace kvferry::detail::cuda_ipc {

using cuda::CopyLane;
using cuda::CopyMethod;
using cuda::CopyPair;
using cuda::Submission;

// The initiator's copy lanes, one per local GPU, created on first use; shared by sessions.
class Lanes {
 public:
  Lanes(CopyMethod method, std::uint32_t blocks) : method_(method), blocks_(blocks) {}
  Result<CopyLane*> get(int device);

 private:
  const CopyMethod method_;
  const std::uint32_t blocks_;
  std::mutex mu_;
  std::map<int, std::unique_ptr<CopyLane>> lanes_;
};

// How we reach one of the target's vram regions (the table's RegionInfo has its id,
// GPU, and the target's address and length).
struct IpcRegion {
  std::uint64_t offset = 0;   // in its allocation
  std::string handle;         // kIpcHandleBytes
  bool revoked = false;
  // (local GPU, address of the region's first byte there): the post path's cache of
  // opened_, cleared on revocation.
  std::vector<std::pair<int, std::uint64_t>> mapped;
};
// The target's regions by address; fixed after connect (entries never move).
using PeerRegions = RegionTable<IpcRegion>;
using PeerRegion = PeerRegions::Entry;

struct SessionConfig {
  std::string agent_name;
  std::chrono::milliseconds peer_timeout{5000};
  std::shared_ptr<Lanes> lanes;
  int progress_wake_fd = -1;  // rung when work is posted: its events are polled from then on
  std::shared_ptr<const SharedSecret> secret;  // null: no authentication
};

class CudaIpcSession : public std::enable_shared_from_this<CudaIpcSession> {
 public:
  // `peer_pid`: the peer's process (checked against the socket at connect); 0 when it is
  // this process.
  CudaIpcSession(SessionConfig cfg, std::string peer, pid_t peer_pid, UniqueFd sock,
                 PeerRegions regions);
  ~CudaIpcSession();

  Status post(const std::shared_ptr<TransferJob>& job);
  void cancel(const std::shared_ptr<TransferJob>& job);
  Status notify(std::string_view message);
  Status health() const { return peer_session_.health(); }

  // For the progress thread (and spinning waiters).
  void poll();            // completes jobs whose events are done
  void on_readable();     // a message from the target
  void check_deadlines() { peer_session_.check_deadlines(); }
  bool copying();         // GPU work outstanding
  bool awaiting_acks() const { return peer_session_.awaiting(); }
  // The reactor's watch of our socket (core/host_sessions.h); it ends before the socket closes.
  void join(HostSessions::Membership m) { membership_ = std::move(m); }
  // Jobs whose copies still run finish (peer lost) when their events complete.
  void fail(const Status& why) { peer_session_.fail(why); }
  bool dead() const { return peer_session_.dead(); }
  int socket_fd() const { return sock_.get(); }

 private:
  struct InFlight {
    std::shared_ptr<TransferJob> job;
    std::vector<std::pair<CopyLane*, Submission>> subs;
    bool keep_table = false;                       // a first post: keep its table when done
    std::shared_ptr<const cuda::KeptTable> table;  // a repeat post: the table it uploads from
  };
  // The table of a request posted before (kernel method): posting it again skips the
  // translation of its pieces. Dropped when the request goes away, on any revocation,
  // and beyond kKeptTables per session.
  struct Kept {
    std::weak_ptr<const PieceList> pieces;
    TransferOp op;
    CopyLane* lane;
    std::shared_ptr<const cuda::KeptTable> table;
  };
  static constexpr std::size_t kKeptTables = 8;
  // Requests posted once (large ones): a table is kept from a request's second post on,
  // so that engines that build a request per transfer do not pay for keeping tables.
  std::vector<std::pair<std::weak_ptr<const PieceList>, TransferOp>> posted_once_;
  static constexpr std::size_t kKeepFromPieces = 1024;  // smaller requests are cheap to translate
  // mu_ held: a strided job in one launch from its lanes and runs (no expanded table);
  // false when a lane's blocks do not lie in one announced region (the caller then takes
  // the per-piece path, whose errors name the piece).
  Result<bool> post_strided(const StridedPieces& sp, bool write, CopyLane& lane, Submission* out);
  Result<std::uint64_t> peer_address(PeerRegion& r, int local_device);  // mu_ held
  Result<std::uint64_t> open_region(PeerRegion& r, int local_device);   // mu_ held
  void drain(std::list<InFlight>& work);  // waits for the events, releases them
  Status start_watching(InFlight f);      // mu_ held: the progress thread polls it
  void on_revoke(std::uint64_t id);
  void close_handles(const std::string& handle);  // mu_ held

  const SessionConfig cfg_;
  // Health, notification acknowledgements (ids, deadlines), peer loss and the peer
  // process's watch: the core's part.
  PeerSession peer_session_;
  const bool same_process_;
  UniqueFd sock_;

  std::mutex mu_;
  PeerRegions regions_;
  std::map<std::pair<std::string, int>, void*> opened_;  // (handle, local GPU) -> mapping
  std::list<InFlight> inflight_;
  std::vector<Kept> kept_;  // newest last
  HostSessions::Membership membership_;  // last: destroyed first, before sock_ closes
};

}  // namespace kvferry::detail::cuda_ipc
