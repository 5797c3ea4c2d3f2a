// Verification of one block-transfer request: fresh random data, poisoned destination,
// byte comparison by whichever side owns the destination.
#include <string>

#include "bench/bench_cases.h"
#include "bench/bench_verify_data.h"
#include "common/block_pattern.h"

namespace kvferry::cli {

Result<VerifyOutcome> verify_block_transfer(InitiatorSession& session, TransferOp op,
                                            std::uint64_t request) {
  const BenchOptions& o = session.options();
  const std::uint32_t pool_blocks = session.pool().layout().blocks();
  VerifyPlan plan{op, o.block_pattern, o.blocks, remote_side_seed(o.seed, request),
                  mix64(o.seed ^ mix64(request) ^ 0x7E51F1EDull)};
  const auto local_ids = choose_block_ids(o.block_pattern, local_side_seed(o.seed, request),
                                          pool_blocks, o.blocks);
  const auto remote_ids = choose_block_ids(o.block_pattern, plan.remote_seed, pool_blocks, o.blocks);

  // Our side first: the source gets the pattern (write) or the destination poison (read).
  if (op == TransferOp::kWrite) {
    fill_request_blocks(session.pool(), local_ids, plan.data_seed);
  } else {
    poison_pool(session.pool());
  }
  KVF_RETURN_IF_ERROR(session.channel().send(ControlType::kVerifyBegin, to_json(plan)));
  KVF_RETURN_IF_ERROR(session.channel().expect(ControlType::kVerifyReady).status());

  // A write carries a notification: the target checks only once it has arrived, which
  // the library promises happens after all the bytes are visible there.
  std::optional<std::string> notification;
  if (op == TransferOp::kWrite) notification = kVerifyNotification;
  KVF_ASSIGN_OR_RETURN(TransferRequest transfer,
                       session.create_request(op, local_ids, remote_ids, session.transfer_options(notification)));
  KVF_RETURN_IF_ERROR(transfer.post().with_context("verified request: post"));
  KVF_RETURN_IF_ERROR(transfer.wait(kTransferTimeout).with_context("verified request: wait"));

  if (op == TransferOp::kRead) return check_request_blocks(session.pool(), local_ids, plan.data_seed);
  KVF_RETURN_IF_ERROR(session.channel().send(ControlType::kVerifyCheck, nlohmann::json::object()));
  KVF_ASSIGN_OR_RETURN(nlohmann::json body, session.channel().expect(ControlType::kVerifyResult));
  return parse_verify_outcome(body);
}

}  // namespace kvferry::cli
