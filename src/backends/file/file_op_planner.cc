#include "backends/file/file_op_planner.h"

#include <algorithm>
#include <string>

namespace kvferry::detail {

bool FileOpPlanner::direct_start(const FileTarget& f, const TransferPiece& p) const {
  if (!allow_direct_ || f.direct_fd < 0 || f.alignment == 0 || max_bytes_ < f.alignment) return false;
  const std::uint64_t a = f.alignment;
  return (p.local + within_) % a == 0 && (p.remote + within_) % a == 0 && p.length - within_ >= a;
}

std::uint64_t FileOpPlanner::segment_length(const IoOp& op, const TransferPiece& p) const {
  const std::uint64_t len = std::min(p.length - within_, max_bytes_ - op.bytes);
  if (op.direct) {
    const std::uint64_t a = op.file->alignment;
    if ((p.local + within_) % a != 0) return 0;
    return len / a * a;
  }
  // A buffered op stops before a piece that could go direct on its own.
  if (op.count > 0 && direct_start(*op.file, p)) return 0;
  return len;
}

Status FileOpPlanner::next(IoOp& op, const Lookup& lookup) {
  const TransferPiece& head = (*pieces_)[piece_];
  KVF_ASSIGN_OR_RETURN(const FileTarget* file, lookup(head.remote_device));
  op.file = file;
  op.write = write_;
  op.offset = head.remote + within_;
  op.bytes = 0;
  op.first = 0;
  op.count = 0;
  op.direct = direct_start(*file, head);
  while (piece_ < pieces_->size() && op.count < kMaxSegments && op.bytes < max_bytes_) {
    const TransferPiece& p = (*pieces_)[piece_];
    if (op.count > 0 && (p.remote_device != file->file_id || p.remote + within_ != op.offset + op.bytes))
      break;
    const std::uint64_t len = segment_length(op, p);
    if (len == 0) break;
    op.segments[op.count++] = iovec{reinterpret_cast<void*>(p.local + within_), len};
    op.bytes += len;
    within_ += len;
    if (within_ < p.length) break;  // the op is full, or the piece's tail needs another op
    ++piece_;
    within_ = 0;
  }
  return Status::Ok();
}

bool IoOp::advance(std::uint64_t moved) {
  bytes -= moved;
  offset += moved;
  while (moved > 0 && first < count) {
    iovec& s = segments[first];
    if (moved >= s.iov_len) {
      moved -= s.iov_len;
      ++first;
    } else {
      s.iov_base = static_cast<char*>(s.iov_base) + moved;
      s.iov_len -= moved;
      moved = 0;
    }
  }
  if (bytes == 0) return false;
  if (direct) {
    const std::uint64_t a = file->alignment;
    bool aligned = offset % a == 0;
    for (std::uint32_t i = first; i < count && aligned; ++i)
      aligned =
          reinterpret_cast<std::uint64_t>(segments[i].iov_base) % a == 0 && segments[i].iov_len % a == 0;
    direct = aligned;
  }
  return true;
}

}  // namespace kvferry::detail
