#include "backends/tcp/tcp_batch_builder.h"

#include <algorithm>

#include "backends/tcp/tcp_wire.h"

namespace kvferry::detail::tcp {

void BatchBuilder::add(std::uint64_t local, std::uint64_t remote, std::uint64_t length) {
  if (length == 0) return;  // nothing to move (the core refuses empty descriptors anyway)
  if (length <= chunk_bytes_) return add_unit(local, remote, length);
  for (std::uint64_t off = 0; off < length; off += chunk_bytes_)
    add_unit(local + off, remote + off, std::min(chunk_bytes_, length - off));
}

void BatchBuilder::add_unit(std::uint64_t local, std::uint64_t remote, std::uint64_t n) {
  Run& r = run_;
  bool joins = false;
  if (r.count == 1 && n == r.unit) {  // a second unit sets the run's strides (increasing, no overlap)
    joins = local > r.local && remote > r.remote && local - r.local >= n && remote - r.remote >= n;
    r.local_stride = local - r.local;
    r.remote_stride = remote - r.remote;
  } else if (r.count > 1 && n == r.unit) {
    joins = local == r.local + r.count * r.local_stride && remote == r.remote + r.count * r.remote_stride;
  }
  if (batch_.bytes + n > kMaxChunkBytes) flush();  // the receiver's cap on a frame's data
  if (joins && r.count > 0) {
    ++r.count;
  } else {
    close_run();
    if (batch_.local.size() >= kMaxSegments) flush();
    r = Run{local, remote, n, n, n, 1};
  }
  batch_.bytes += n;
  if (++units_ >= kMaxFrameUnits || batch_.bytes >= batch_bytes_) flush();
}

void BatchBuilder::close_run() {
  const Run& r = run_;
  if (r.count == 0) return;
  const WireSegment e{r.remote, r.unit, r.count > 1 ? r.remote_stride : r.unit, r.count};
  batch_.table.append(reinterpret_cast<const char*>(&e), sizeof e);
  batch_.local.push_back(make_segment(reinterpret_cast<std::uint8_t*>(r.local), r.unit, r.local_stride, r.count));
  run_.count = 0;
}

void BatchBuilder::flush() {
  close_run();
  if (batch_.local.empty()) return;
  emit_(std::move(batch_));
  batch_ = Batch{};
  units_ = 0;
}

void BatchBuilder::finish() { flush(); }

}  // namespace kvferry::detail::tcp
