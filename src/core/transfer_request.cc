#include "core/request_state.h"
#include "kvferry/completion_queue.h"
#include "kvferry/prepared_list.h"
#include "kvferry/transfer.h"
#include "core/prepared_data.h"

namespace kvferry {

std::string_view to_string(TransferOp op) noexcept { return op == TransferOp::kRead ? "read" : "write"; }

std::string_view to_string(TransferState state) noexcept {
  switch (state) {
    case TransferState::kReady: return "ready";
    case TransferState::kInProgress: return "in progress";
    case TransferState::kDone: return "done";
    case TransferState::kError: return "error";
  }
  return "unknown";
}

TransferRequest::TransferRequest(std::shared_ptr<detail::RequestState> state) : state_(std::move(state)) {}
TransferRequest::TransferRequest(TransferRequest&&) noexcept = default;
TransferRequest& TransferRequest::operator=(TransferRequest&&) noexcept = default;
TransferRequest::~TransferRequest() = default;  // RequestState's destructor cancels

Status TransferRequest::post() { return state_ ? state_->post() : FailedPrecondition("moved-from request"); }
Status TransferRequest::post(CompletionQueue& queue) {
  if (state_) return state_->post(queue.sink_);
  Status s = FailedPrecondition("moved-from request");
  queue.sink_->expect();
  queue.sink_->push(Completion{0, s, {}, {}});
  return s;
}
std::uint64_t TransferRequest::tag() const { return state_ ? state_->tag() : 0; }
TransferState TransferRequest::state() const noexcept { return state_ ? state_->state() : TransferState::kError; }
Status TransferRequest::error() const { return state_ ? state_->error() : FailedPrecondition("moved-from request"); }
Status TransferRequest::wait(std::chrono::nanoseconds timeout) {
  return state_ ? state_->wait(timeout) : FailedPrecondition("moved-from request");
}
void TransferRequest::cancel() {
  if (state_) state_->cancel();
}
TransferTelemetry TransferRequest::telemetry() const { return state_ ? state_->telemetry() : TransferTelemetry{}; }
const std::string& TransferRequest::peer() const {
  static const std::string kNone;
  return state_ ? state_->peer() : kNone;
}
TransferOp TransferRequest::op() const { return state_ ? state_->op() : TransferOp::kRead; }

std::size_t PreparedList::size() const { return data_ ? data_->descriptors.size() : 0; }
MemoryKind PreparedList::kind() const { return data_ ? data_->kind : MemoryKind::kDram; }
bool PreparedList::is_local() const { return data_ ? data_->local : true; }
const std::string& PreparedList::peer() const {
  static const std::string kNone;
  return data_ ? data_->peer : kNone;
}

std::size_t PreparedLanes::lanes() const { return data_ ? data_->lanes.lane_addresses.size() : 0; }
std::uint32_t PreparedLanes::blocks() const { return data_ ? data_->lanes.blocks : 0; }
MemoryKind PreparedLanes::kind() const { return data_ ? data_->lanes.kind : MemoryKind::kDram; }
bool PreparedLanes::is_local() const { return data_ ? data_->local : true; }
const std::string& PreparedLanes::peer() const {
  static const std::string kNone;
  return data_ ? data_->peer : kNone;
}

}  // namespace kvferry
