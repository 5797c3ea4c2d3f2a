// Names of dtypes and arrangements, as the CLI, the metadata errors and logs print them.
#include <array>
#include <utility>

#include "kvferry/kv/kv_layout.h"

namespace kvferry {
namespace {

template <typename Enum, std::size_t N>
bool parse_name(std::string_view text, const std::array<std::pair<std::string_view, Enum>, N>& names,
                Enum* out) {
  for (const auto& [name, value] : names) {
    if (name == text) {
      *out = value;
      return true;
    }
  }
  return false;
}

}  // namespace

std::uint32_t dtype_bytes(KvDtype dtype) noexcept {
  switch (dtype) {
    case KvDtype::kBf16:
    case KvDtype::kFp16: return 2;
    case KvDtype::kFp8: return 1;
    case KvDtype::kFp32: return 4;
  }
  return 0;
}

std::string_view to_string(KvDtype dtype) noexcept {
  switch (dtype) {
    case KvDtype::kBf16: return "bf16";
    case KvDtype::kFp16: return "fp16";
    case KvDtype::kFp8: return "fp8";
    case KvDtype::kFp32: return "fp32";
  }
  return "";
}

bool parse_kv_dtype(std::string_view text, KvDtype* out) noexcept {
  static constexpr std::array<std::pair<std::string_view, KvDtype>, 11> kNames = {{
      {"bf16", KvDtype::kBf16},
      {"bfloat16", KvDtype::kBf16},
      {"fp16", KvDtype::kFp16},
      {"float16", KvDtype::kFp16},
      {"half", KvDtype::kFp16},
      {"fp8", KvDtype::kFp8},
      {"float8", KvDtype::kFp8},
      {"fp8_e4m3", KvDtype::kFp8},
      {"fp8_e5m2", KvDtype::kFp8},
      {"fp32", KvDtype::kFp32},
      {"float32", KvDtype::kFp32},
  }};
  return parse_name(text, kNames, out);
}

std::string_view to_string(KvArrangement arrangement) noexcept {
  switch (arrangement) {
    case KvArrangement::kVllmNhd: return "vllm-nhd";
    case KvArrangement::kVllmHnd: return "vllm-hnd";
    case KvArrangement::kFlashInfer: return "flashinfer";
    case KvArrangement::kSglangTokenSlots: return "sglang";
    case KvArrangement::kMla: return "mla";
  }
  return "";
}

bool parse_kv_arrangement(std::string_view text, KvArrangement* out) noexcept {
  static constexpr std::array<std::pair<std::string_view, KvArrangement>, 8> kNames = {{
      {"vllm-nhd", KvArrangement::kVllmNhd},
      {"nhd", KvArrangement::kVllmNhd},
      {"vllm", KvArrangement::kVllmNhd},
      {"vllm-hnd", KvArrangement::kVllmHnd},
      {"hnd", KvArrangement::kVllmHnd},
      {"flashinfer", KvArrangement::kFlashInfer},
      {"sglang", KvArrangement::kSglangTokenSlots},
      {"mla", KvArrangement::kMla},
  }};
  return parse_name(text, kNames, out);
}

}  // namespace kvferry
