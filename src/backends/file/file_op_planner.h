// FileOpPlanner: cuts a job's pieces (memory address, file offset, length, file id) into
// IoOps. Consecutive pieces of one file whose file bytes follow each other become one op
// with several memory segments (a KV block scattered in memory, contiguous in the file,
// is one pwritev), up to `max_bytes` per op. A piece whose file offset, memory address
// and length are aligned to the file's O_DIRECT alignment goes direct; an unaligned
// tail of a piece goes through the page cache on its own.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "backends/file/file_io.h"
#include "core/transfer_job.h"

namespace kvferry::detail {

class FileOpPlanner {
 public:
  // `lookup` finds a registered file by id, or says why it cannot be used.
  using Lookup = std::function<Result<const FileTarget*>(std::uint32_t file_id)>;

  FileOpPlanner(const std::vector<TransferPiece>* pieces, bool write, std::uint64_t max_bytes,
                bool allow_direct)
      : pieces_(pieces), write_(write), max_bytes_(max_bytes), allow_direct_(allow_direct) {}

  bool done() const { return piece_ >= pieces_->size(); }
  // Fills `op` with the next run. Errors: a piece names a file that is not registered.
  Status next(IoOp& op, const Lookup& lookup);

 private:
  // Whether the rest of piece `p` (from the cursor) may start a direct op.
  bool direct_start(const FileTarget& f, const TransferPiece& p) const;
  // Length of the next segment at the cursor if it may join `op` (0: it may not).
  std::uint64_t segment_length(const IoOp& op, const TransferPiece& p) const;

  const std::vector<TransferPiece>* pieces_;
  const bool write_;
  const std::uint64_t max_bytes_;
  const bool allow_direct_;
  std::size_t piece_ = 0;     // cursor: piece index
  std::uint64_t within_ = 0;  // cursor: bytes of that piece already planned
};

}  // namespace kvferry::detail
