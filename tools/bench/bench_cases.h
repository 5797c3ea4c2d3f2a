// bench_cases.h — the measured cases of `kvferry bench`, run by the initiator.
#pragma once

#include "bench/bench_protocol.h"
#include "bench/bench_report.h"
#include "bench/bench_session.h"

namespace kvferry::cli {

// Paged-KV case: `blocks` blocks of every layer per request, as one index transfer
// against the prepared whole-pool lists. Warm-up, then timed requests; then the ceiling
// of the backend's plain path; then, with --verify, one more request with fresh random
// data and a poisoned destination, compared byte for byte.
Result<CaseResult> run_block_transfer_case(InitiatorSession& session, TransferOp op);

// Batch case (--batch N): N requests of `blocks` blocks of every layer, created fresh,
// posted with one post_batch and drained from a completion queue (waiting on its fd),
// against one request of the same N x blocks blocks in the same run (the "ceiling").
// The ratio is one request's time over the batch's: >= 0.91 means within 1.1x.
Result<CaseResult> run_batch_case(InitiatorSession& session, TransferOp op);

// Small-message case: an 8-byte write with a notification, posted again and again; the
// latency is post() to wait() done. Ceiling: an 8-byte ping-pong on the control socket.
Result<CaseResult> run_write_notify_latency_case(InitiatorSession& session);

// Verifies one request (number `request`) of `op`; used by run_block_transfer_case.
Result<VerifyOutcome> verify_block_transfer(InitiatorSession& session, TransferOp op,
                                            std::uint64_t request);

}  // namespace kvferry::cli
