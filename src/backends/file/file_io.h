// The file backend's unit of work and the engines that run it.
//
// An IoOp is one preadv/pwritev: a run of consecutive file bytes, gathered from (or
// scattered into) up to kMaxSegments memory segments. FileOpPlanner cuts a job's pieces
// into IoOps; an IoEngine runs them (io_uring at a queue depth, or plain preadv/pwritev
// on the calling thread when io_uring is unavailable). Engines are used by one thread.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvferry/status.h"

namespace kvferry::detail {

inline constexpr std::size_t kMaxSegments = 256;

// What the backend knows of one registered file.
struct FileTarget {
  std::uint32_t file_id = 0;  // the descriptors' device
  std::uint64_t region_id = 0;
  int fd = -1;
  int direct_fd = -1;           // -1: page cache only
  std::uint32_t alignment = 0;  // O_DIRECT alignment of offset, length and address
  std::uint64_t length = 0;
  std::string path;
};

struct IoOp {
  void* owner = nullptr;  // the connection's job state
  const FileTarget* file = nullptr;
  bool write = false;
  bool direct = false;
  std::uint64_t offset = 0;  // file offset of the next byte to move
  std::uint64_t bytes = 0;   // bytes still to move
  std::uint32_t first = 0;   // first segment still to move
  std::uint32_t count = 0;   // segments in use
  std::array<iovec, kMaxSegments> segments{};

  int fd() const { return direct ? file->direct_fd : file->fd; }
  // Drops the first `moved` bytes (a short completion); false if nothing is left. A
  // direct op whose rest is no longer aligned continues through the page cache.
  bool advance(std::uint64_t moved);
};

struct IoCompletion {
  IoOp* op = nullptr;
  std::int64_t result = 0;  // bytes moved, or -errno
};

class IoEngine {
 public:
  virtual ~IoEngine() = default;
  // "io_uring" or "preadv/pwritev".
  virtual const char* name() const = 0;
  // Ops that may be in flight at once.
  virtual unsigned depth() const = 0;
  // Queues an op (at most depth() in flight); it starts at the next reap().
  virtual void queue(IoOp& op) = 0;
  // Starts queued ops and appends finished ones to `out`. With `block`, returns only once
  // at least one op finished (the caller blocks only with ops in flight).
  virtual Status reap(std::vector<IoCompletion>& out, bool block) = 0;
};

// io_uring with `depth` entries; an error when io_uring is unavailable (kernel, seccomp,
// or a build without liburing).
Result<std::unique_ptr<IoEngine>> make_uring_engine(unsigned depth);
std::unique_ptr<IoEngine> make_sync_engine();
// Empty if io_uring works here, else why not.
std::string uring_unavailable_reason();

// A message naming the file, the direction, the offset and what errno means for it.
Status io_error(const IoOp& op, int err);

}  // namespace kvferry::detail
