#include "tp/tp_spec.h"

#include "kv/kv_agent.h"

#include <algorithm>

#include "common/block_choice.h"
#include "kv/kv_presets.h"

namespace kvferry::cli {
namespace {

Status parse_arrangement(const std::string& text, KvArrangement fallback, const char* option, KvArrangement* out) {
  if (text.empty()) {
    *out = fallback;
    return Status::Ok();
  }
  if (!parse_kv_arrangement(text, out)) {
    return InvalidArgument(std::string(option) + " '" + text + "': expected vllm-nhd, vllm-hnd, flashinfer, sglang or mla");
  }
  return Status::Ok();
}

}  // namespace

Status TpRunSpec::finalize() {
  const KvModelPreset* preset = find_kv_model_preset(model);
  if (preset == nullptr) return InvalidArgument("--model '" + model + "': known models are " + kv_model_preset_names());
  model_geometry = preset->geometry;
  KVF_ASSIGN_OR_RETURN(backend_params, parse_backend_params(params));
  if (kv_heads != 0) model_geometry.kv_heads = kv_heads;
  KVF_RETURN_IF_ERROR(parse_arrangement(src_layout, preset->arrangement, "--src-layout", &src_arrangement));
  KVF_RETURN_IF_ERROR(parse_arrangement(dst_layout, preset->arrangement, "--dst-layout", &dst_arrangement));
  if ((src_arrangement == KvArrangement::kMla) != (dst_arrangement == KvArrangement::kMla)) {
    return InvalidArgument("--src-layout and --dst-layout: MLA pools exchange only with MLA pools");
  }
  if (!parse_tp_path(path, &tp_path)) return InvalidArgument("--path '" + path + "': expected auto, host, device or direct");
  if (!parse_memory_kind(mem, &kind) || kind == MemoryKind::kFile) return InvalidArgument("--mem '" + mem + "': expected dram or vram");
  if (tp_path == TpPath::kDeviceStaging && kind != MemoryKind::kVram) {
    return InvalidArgument("--path device needs GPU pools (--mem vram)");
  }
  if (naive && tp_path != TpPath::kDirect) return InvalidArgument("the naive plan is a direct path (--path direct)");
  if (tokens == 0) return InvalidArgument("--tokens must be positive");
  if (requests < 1) return InvalidArgument("--requests must be positive");
  if (chunk_tokens == 0 || chunk_tokens > tokens) chunk_tokens = tokens;
  KVF_ASSIGN_OR_RETURN(TpMapping mapping, TpMapping::create(model_geometry.kv_heads, prefill_tp, decode_tp,
                                                            src_arrangement == KvArrangement::kMla));
  (void)mapping;  // refuses what cannot be mapped, naming the numbers
  return Status::Ok();
}

TpGroups TpRunSpec::groups() const {
  return TpGroups{model_geometry.kv_heads, prefill_tp, decode_tp, src_arrangement == KvArrangement::kMla};
}

namespace {

Result<KvLayout> rank_layout(const TpRunSpec& s, std::uint32_t heads, KvArrangement arrangement,
                             std::uint32_t block_tokens) {
  KvGeometry g = s.model_geometry;
  g.kv_heads = heads;
  if (block_tokens != 0) g.block_tokens = block_tokens;
  const std::uint64_t blocks = (s.tokens + g.block_tokens - 1) / g.block_tokens;
  // Room around the request so scattered ids scatter, and stray writes have somewhere to land.
  return KvLayout::create(g, arrangement, static_cast<std::uint32_t>(blocks + std::max<std::uint64_t>(8, blocks / 4)));
}

}  // namespace

Result<KvLayout> TpRunSpec::prefill_layout(std::uint32_t rank) const {
  KVF_ASSIGN_OR_RETURN(HeadRange heads, tp_rank_heads(model_geometry.kv_heads, prefill_tp, rank));
  return rank_layout(*this, heads.count, src_arrangement, src_block_tokens);
}

Result<KvLayout> TpRunSpec::decode_layout(std::uint32_t rank) const {
  KVF_ASSIGN_OR_RETURN(HeadRange heads, tp_rank_heads(model_geometry.kv_heads, decode_tp, rank));
  return rank_layout(*this, heads.count, dst_arrangement, dst_block_tokens);
}

std::vector<std::uint32_t> TpRunSpec::block_table(const KvLayout& layout, bool prefill, std::uint32_t rank) const {
  const std::uint64_t side = (prefill ? 0x100u : 0x200u) + rank;
  return choose_block_ids(BlockPattern::kScattered, local_side_seed(seed, side), layout.blocks(),
                          layout.blocks_for_tokens(tokens));
}

std::uint64_t TpRunSpec::decode_rank_bytes(std::uint32_t rank) const {
  Result<HeadRange> heads = tp_rank_heads(model_geometry.kv_heads, decode_tp, rank);
  if (!heads.ok()) return 0;
  const std::uint64_t kv = src_arrangement == KvArrangement::kMla ? 1 : 2;
  return tokens * heads->count * model_geometry.layers * kv * model_geometry.head_dim * dtype_bytes(model_geometry.dtype);
}

std::uint64_t TpRunSpec::total_bytes() const {
  std::uint64_t sum = 0;
  for (std::uint32_t d = 0; d < decode_tp; ++d) sum += decode_rank_bytes(d);
  return sum;
}

std::vector<std::string> TpRunSpec::agent_backends() const {
  std::vector<std::string> names{host_backend()};
  if (kind == MemoryKind::kVram) names.push_back("cuda_ipc");
  return names;
}

nlohmann::json TpRunSpec::to_json() const {
  return nlohmann::json{{"prefill_tp", prefill_tp}, {"decode_tp", decode_tp}, {"model", model},
                        {"kv_heads", kv_heads}, {"src_layout", src_layout}, {"dst_layout", dst_layout},
                        {"src_block_tokens", src_block_tokens}, {"dst_block_tokens", dst_block_tokens},
                        {"mem", mem}, {"backend", backend}, {"path", path}, {"tokens", tokens},
                        {"chunk_tokens", chunk_tokens}, {"requests", requests}, {"naive", naive}, {"seed", seed},
                        {"peer_timeout_ms", peer_timeout_ms}, {"staging_mib", staging_mib},
                        {"kill_rank", kill_rank}, {"timeout_s", timeout_s}, {"params", params}};
}

Result<TpRunSpec> TpRunSpec::from_json(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return InvalidArgument("--spec is not a JSON object");
  TpRunSpec s;
  try {
    s.prefill_tp = j.at("prefill_tp");
    s.decode_tp = j.at("decode_tp");
    s.model = j.at("model");
    s.kv_heads = j.at("kv_heads");
    s.src_layout = j.at("src_layout");
    s.dst_layout = j.at("dst_layout");
    s.src_block_tokens = j.at("src_block_tokens");
    s.dst_block_tokens = j.at("dst_block_tokens");
    s.mem = j.at("mem");
    s.backend = j.at("backend");
    s.path = j.at("path");
    s.tokens = j.at("tokens");
    s.chunk_tokens = j.at("chunk_tokens");
    s.requests = j.at("requests");
    s.naive = j.at("naive");
    s.seed = j.at("seed");
    s.peer_timeout_ms = j.at("peer_timeout_ms");
    s.staging_mib = j.at("staging_mib");
    s.kill_rank = j.at("kill_rank");
    s.timeout_s = j.at("timeout_s");
    s.params = j.at("params").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(std::string("--spec: ") + e.what());
  }
  KVF_RETURN_IF_ERROR(s.finalize());
  return s;
}

}  // namespace kvferry::cli
