// BatchBuilder: an initiator's job cut into batch frames (tcp_wire.h): each frame's
// segment table (the peer's side) and local segments (ours), in the same order.
//
// A piece of the same length as the run before it, at that run's fixed strides on both
// sides, joins the run as one more unit, so a strided transfer of small pieces (a KV
// head slice per token row) costs one table entry and one local segment per run, not per
// piece, and nothing is allocated per piece. Pieces above chunk_bytes are cut into chunks
// first. A frame is emitted once it holds batch_bytes of data, or the wire's cap on
// entries or units would be passed.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backends/tcp/tcp_segments.h"

namespace kvferry::detail::tcp {

struct Batch {
  std::string table;            // WireSegment entries
  std::vector<Segment> local;   // our bytes, in table order
  std::uint64_t bytes = 0;      // data bytes
};

class BatchBuilder {
 public:
  BatchBuilder(std::uint64_t chunk_bytes, std::uint64_t batch_bytes, std::function<void(Batch&&)> emit)
      : chunk_bytes_(chunk_bytes), batch_bytes_(batch_bytes), emit_(std::move(emit)) {}
  void add(std::uint64_t local, std::uint64_t remote, std::uint64_t length);
  void finish();  // emits the last frame, if any

 private:
  void add_unit(std::uint64_t local, std::uint64_t remote, std::uint64_t n);
  void close_run();
  void flush();

  struct Run {
    std::uint64_t local = 0, remote = 0, unit = 0, local_stride = 0, remote_stride = 0, count = 0;
  };
  const std::uint64_t chunk_bytes_;
  const std::uint64_t batch_bytes_;
  std::function<void(Batch&&)> emit_;
  Batch batch_;
  std::uint64_t units_ = 0;
  Run run_;
};

}  // namespace kvferry::detail::tcp
