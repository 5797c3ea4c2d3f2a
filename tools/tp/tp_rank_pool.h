// tp_rank_pool.h — the KV pool of one rank of a `kvferry tp-demo` run, in host memory
// (shared memory for backends that map it) or on a GPU, and its contents: every element
// (layer, K/V, token, model head, dim) of a request holds a value derived from exactly
// those five numbers, so a decode rank checks every element it received against what
// its heads must hold, and finds any element that landed at the wrong token, head,
// layer or dim. Everything else of a decode pool must still hold the poison.
// The element addressing here is written independently of the library's (it is the
// check). Not thread-safe: one owner; the memory must outlive the Agent it is
// registered with.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kvferry/kvferry.h"
#include "kvferry/kv/tp_mapping.h"

namespace kvferry::cli {

class TpRankPool {
 public:
  virtual ~TpRankPool() = default;
  // `layout`'s pool of `kind` (GPU `device` for vram), every byte `poison`. Host pools come
  // from `shared_by`'s shared memory when given.
  static Result<std::unique_ptr<TpRankPool>> allocate(const KvLayout& layout, MemoryKind kind, int device,
                                                      std::uint8_t poison, Agent* shared_by);

  virtual const KvPool& pool() const = 0;
  // Prefill: the request's tokens of our heads (model numbering from `heads.first`).
  virtual Status fill(std::span<const std::uint32_t> blocks, std::uint64_t tokens, HeadRange heads,
                      std::uint64_t seed) = 0;
  // Decode: every byte back to the poison.
  virtual Status poison() = 0;
  // Decode: every element of the request's tokens and our heads holds its value, and every
  // other byte the poison. The first difference, described, or nullopt.
  virtual Result<std::optional<std::string>> verify(std::span<const std::uint32_t> blocks, std::uint64_t tokens,
                                                    HeadRange heads, std::uint64_t seed) = 0;
};

// Host-side image work shared by every kind, on a pool image at `base` laid out as
// `layout` with its tensors back to back. The check consumes the image: it overwrites
// each checked element with the poison, then compares the whole image with the poison.
void fill_tp_image(const KvLayout& layout, std::uint8_t* base, std::span<const std::uint32_t> blocks,
                   std::uint64_t tokens, HeadRange heads, std::uint64_t seed);
std::optional<std::string> check_and_clear_tp_image(const KvLayout& layout, std::uint8_t* base,
                                                    std::span<const std::uint32_t> blocks, std::uint64_t tokens,
                                                    HeadRange heads, std::uint64_t seed, std::uint8_t poison);

}  // namespace kvferry::cli
