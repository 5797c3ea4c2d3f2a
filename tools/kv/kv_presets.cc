#include "kv/kv_presets.h"

namespace kvferry::cli {

const std::vector<KvModelPreset>& kv_model_presets() {
  static const std::vector<KvModelPreset> presets = {
      {"mistral-small-3.1",
       "Mistral-Small-3.1-24B, vLLM defaults: 64 KiB blocks",
       {40, 8, 128, 16, KvDtype::kBf16},
       KvArrangement::kVllmNhd},
      {"llama-3.1-8b",
       "Llama-3.1-8B: 32 layers, 8 KV heads (GQA), head dim 128",
       {32, 8, 128, 16, KvDtype::kBf16},
       KvArrangement::kVllmNhd},
      {"llama-3.1-70b",
       "Llama-3.1-70B: 80 layers, 8 KV heads (GQA), head dim 128",
       {80, 8, 128, 16, KvDtype::kBf16},
       KvArrangement::kVllmNhd},
      {"qwen2.5-7b",
       "Qwen2.5-7B: 28 layers, 4 KV heads (GQA), head dim 128",
       {28, 4, 128, 16, KvDtype::kBf16},
       KvArrangement::kVllmNhd},
      {"deepseek-v3",
       "DeepSeek-V3: 61 layers, MLA latent 512 + rope 64 = 576, 64-token blocks",
       {61, 1, 576, 64, KvDtype::kBf16},
       KvArrangement::kMla},
  };
  return presets;
}

const KvModelPreset* find_kv_model_preset(std::string_view name) {
  for (const KvModelPreset& preset : kv_model_presets())
    if (name == preset.name) return &preset;
  return nullptr;
}

std::string kv_model_preset_names() {
  std::string names;
  for (const KvModelPreset& preset : kv_model_presets())
    names += (names.empty() ? "" : ", ") + std::string(preset.name);
  return names;
}

}  // namespace kvferry::cli
