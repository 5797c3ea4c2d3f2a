#include "kvferry/kv/token_blocks.h"

#include <string>

namespace kvferry {

std::span<const std::uint32_t> blocks_after_prefix_hit(std::span<const std::uint32_t> block_table,
                                                       std::uint64_t cached_tokens,
                                                       std::uint32_t block_tokens) {
  if (block_tokens == 0) return block_table;
  const std::uint64_t cached_blocks = cached_tokens / block_tokens;
  if (cached_blocks >= block_table.size()) return {};
  return block_table.subspan(static_cast<std::size_t>(cached_blocks));
}

Status append_blocks_of_slot_runs(const KvLayout& layout, std::span<const SlotRun> runs,
                                  std::vector<std::uint32_t>& out) {
  const std::uint64_t tokens = layout.geometry().block_tokens;
  const std::uint64_t slots = std::uint64_t{layout.blocks()} * tokens;
  std::uint64_t added = 0;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const SlotRun& run = runs[i];
    const std::string where = "slot run " + std::to_string(i) + " [" + std::to_string(run.first_slot) +
                              ", +" + std::to_string(run.count) + ")";
    if (run.count == 0) return InvalidArgument(where + " is empty");
    if (run.first_slot % tokens != 0) {
      return InvalidArgument(where + " does not start on a block boundary (" + std::to_string(tokens) +
                             " slots per block)");
    }
    if (run.first_slot >= slots || run.count > slots - run.first_slot) {
      return InvalidArgument(where + " runs past the pool's " + std::to_string(slots) + " slots");
    }
    added += (run.count + tokens - 1) / tokens;
  }
  out.reserve(out.size() + added);
  for (const SlotRun& run : runs) {
    const auto first = static_cast<std::uint32_t>(run.first_slot / tokens);
    const auto count = static_cast<std::uint32_t>((run.count + tokens - 1) / tokens);
    for (std::uint32_t b = 0; b < count; ++b) out.push_back(first + b);
  }
  return Status::Ok();
}

}  // namespace kvferry
