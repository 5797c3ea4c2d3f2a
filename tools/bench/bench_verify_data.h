// bench_verify_data.h — filling sources and checking destinations of a verified request.
//
// Shared by both sides: whichever process owns the destination checks it. Slot i of
// layer l (the i-th block id of the request) holds pattern (data_seed, l, i), so a block
// that lands in the wrong slot or layer fails. Every other block of the destination pool
// must still hold the poison byte: a transfer must not write outside its descriptors.
#pragma once

#include <cstdint>
#include <vector>

#include "bench/bench_protocol.h"
#include "common/host_pool.h"

namespace kvferry::cli {

inline constexpr std::uint8_t kPoisonByte = 0xAB;

void fill_request_blocks(const HostPool& pool, const std::vector<std::uint32_t>& block_ids,
                         std::uint64_t data_seed);

// Sets every byte of the pool to kPoisonByte.
void poison_pool(const HostPool& pool);

VerifyOutcome check_request_blocks(const HostPool& pool, const std::vector<std::uint32_t>& block_ids,
                                   std::uint64_t data_seed);

}  // namespace kvferry::cli
