// tp_send_book.h — what a TpSender knows of its requests, shared by its two halves: the
// ask handling (tp_sender.cc: asks become grants, chunks become pieces, wait()) and the
// piece pump (tp_piece_pump.cc: gathers, writes and reaps pieces on its own threads).
// Everything here is guarded by SendBook::mutex; `changed` is signalled whenever a piece
// is queued, lands or fails, and on stop.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kv/tp/tp_head_lanes.h"
#include "kv/tp/tp_wire.h"
#include "kvferry/kv/kv_pool.h"
#include "kvferry/status.h"

namespace kvferry::tp {

struct Piece {
  std::uint64_t first = 0;
  std::uint64_t tokens = 0;
};

// One decode rank's ask for one request.
struct Grant {
  TpAsk ask;
  std::string peer;
  std::vector<std::uint32_t> destination_blocks;  // direct
  std::optional<KvPool> destination_pool;         // direct
  std::optional<DirectLanes> lanes;               // direct, where both pools have a lane form
  std::deque<Piece> todo;
  std::uint32_t in_flight = 0;  // pieces taken by the pump and not reaped
  std::uint64_t tokens_landed = 0;
};

struct SendRequest {
  std::uint64_t order = 0;  // arrival: the pump serves older requests first
  std::vector<std::uint32_t> blocks;
  std::vector<Piece> chunks;
  bool sent_any = false;
  bool last_seen = false;
  std::uint64_t end_token = 0;            // of the last chunk once seen
  std::uint64_t tokens = 0;               // sum of chunks
  std::map<std::uint32_t, Grant> grants;  // by decode rank
  Status error;
};

struct SendBook {
  std::mutex mutex;
  std::condition_variable changed;
  std::map<std::string, SendRequest, std::less<>> requests;
  std::uint64_t next_order = 0;
  Status first_new_error;  // handed to the next progress()
  bool stopping = false;

  // Records a request's first error (the pump stops its pieces; wait() returns it).
  void fail(SendRequest& request, const Status& why) {
    if (!request.error.ok()) return;
    request.error = why;
    if (first_new_error.ok()) first_new_error = why;
  }
};

}  // namespace kvferry::tp
