// kv_presets.h — KV-cache geometries of a few common models, for `kvferry serve`,
// `pull` and `estimate` (`--model NAME`). Values are the models' published configs
// (num_hidden_layers, num_key_value_heads, head_dim; MLA: kv_lora_rank + rope dim)
// with the engines' default block sizes.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "kvferry/kvferry.h"

namespace kvferry::cli {

struct KvModelPreset {
  const char* name;
  const char* note;  // where the numbers come from, one line
  KvGeometry geometry;
  KvArrangement arrangement;
};

const std::vector<KvModelPreset>& kv_model_presets();
// nullptr when unknown.
const KvModelPreset* find_kv_model_preset(std::string_view name);
// "mistral-small-3.1, llama-3.1-8b, ..." for help texts and errors.
std::string kv_model_preset_names();

}  // namespace kvferry::cli
