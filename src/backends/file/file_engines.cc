// The two IoEngines: io_uring (liburing) and plain preadv/pwritev.
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>

#include "backends/file/file_io.h"

#ifdef KVFERRY_HAVE_LIBURING
#include <liburing.h>
#endif

namespace kvferry::detail {
namespace {

std::int64_t run_sync(IoOp& op) {
  const iovec* iov = &op.segments[op.first];
  const int n = static_cast<int>(op.count - op.first);
  const auto offset = static_cast<off_t>(op.offset);
  for (;;) {
    ssize_t r = op.write ? pwritev(op.fd(), iov, n, offset) : preadv(op.fd(), iov, n, offset);
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}

class SyncEngine final : public IoEngine {
 public:
  const char* name() const override { return "preadv/pwritev"; }
  unsigned depth() const override { return 1; }
  void queue(IoOp& op) override { queued_.push_back(&op); }
  Status reap(std::vector<IoCompletion>& out, bool) override {
    while (!queued_.empty()) {
      IoOp* op = queued_.front();
      queued_.pop_front();
      out.push_back(IoCompletion{op, run_sync(*op)});
    }
    return Status::Ok();
  }

 private:
  std::deque<IoOp*> queued_;
};

#ifdef KVFERRY_HAVE_LIBURING
class UringEngine final : public IoEngine {
 public:
  ~UringEngine() override { io_uring_queue_exit(&ring_); }

  static Result<std::unique_ptr<IoEngine>> create(unsigned depth) {
    std::unique_ptr<UringEngine> e(new UringEngine(depth));
    io_uring_params p{};
    // One thread submits and reaps; completions need not interrupt it.
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN;
    int r = io_uring_queue_init_params(depth, &e->ring_, &p);
    if (r == -EINVAL) {  // an older kernel without those flags
      p = io_uring_params{};
      r = io_uring_queue_init_params(depth, &e->ring_, &p);
    }
    if (r < 0) return Unavailable(std::string("io_uring: ") + std::strerror(-r));
    return std::unique_ptr<IoEngine>(std::move(e));
  }

  const char* name() const override { return "io_uring"; }
  unsigned depth() const override { return depth_; }

  void queue(IoOp& op) override {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);  // never null: at most depth() in flight
    const iovec* iov = &op.segments[op.first];
    const unsigned n = op.count - op.first;
    if (op.write)
      io_uring_prep_writev(sqe, op.fd(), iov, n, op.offset);
    else
      io_uring_prep_readv(sqe, op.fd(), iov, n, op.offset);
    io_uring_sqe_set_data(sqe, &op);
  }

  Status reap(std::vector<IoCompletion>& out, bool block) override {
    for (;;) {
      int r = block ? io_uring_submit_and_wait(&ring_, 1) : io_uring_submit(&ring_);
      if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME)
        return IoErrorFromErrno("io_uring_enter", -r);
      unsigned head = 0, seen = 0;
      io_uring_cqe* cqe = nullptr;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        out.push_back(IoCompletion{static_cast<IoOp*>(io_uring_cqe_get_data(cqe)), cqe->res});
        ++seen;
      }
      io_uring_cq_advance(&ring_, seen);
      if (seen > 0 || !block) return Status::Ok();
    }
  }

 private:
  explicit UringEngine(unsigned depth) : depth_(depth) {}
  io_uring ring_{};
  const unsigned depth_;
};
#endif

}  // namespace

Result<std::unique_ptr<IoEngine>> make_uring_engine(unsigned depth) {
#ifdef KVFERRY_HAVE_LIBURING
  return UringEngine::create(depth);
#else
  (void)depth;
  return Unavailable("this build has no liburing");
#endif
}

std::unique_ptr<IoEngine> make_sync_engine() { return std::make_unique<SyncEngine>(); }

std::string uring_unavailable_reason() {
  static const std::string reason = [] {
    auto e = make_uring_engine(2);
    return e.ok() ? std::string() : e.status().message();
  }();
  return reason;
}

Status io_error(const IoOp& op, int err) {
  const std::string where = "'" + op.file->path + "' at offset " + std::to_string(op.offset) + " (" +
                            std::to_string(op.bytes) + " bytes)";
  const char* verb = op.write ? "writing " : "reading ";
  switch (err) {
    case ENOSPC: return IoError("no space left on device writing " + where);
    case EDQUOT: return IoError("disk quota exceeded writing " + where);
    case EFBIG: return IoError("file size limit exceeded writing " + where);
    case EIO: return IoError(std::string("I/O error (EIO) ") + verb + where);
    case EBADF:
      if (op.write)
        return FailedPrecondition("'" + op.file->path + "' was registered read-only; cannot write it");
      break;
    default: break;
  }
  return IoErrorFromErrno(verb + where, err);
}

}  // namespace kvferry::detail
