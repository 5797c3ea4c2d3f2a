#include "kv/tp/tp_wire.h"

#include <cstring>

#include "core/byte_io.h"

namespace kvferry::tp {
namespace {

constexpr std::uint8_t kVersion = 1;
constexpr char kEndpointMagic[4] = {'K', 'V', 'T', 'R'};
constexpr char kAskMagic[4] = {'K', 'V', 'T', 'A'};
constexpr char kLandedMagic[4] = {'K', 'V', 'T', 'L'};
constexpr char kRefusalMagic[4] = {'K', 'V', 'T', 'X'};
// A block table longer than this is not a request of any model we know.
constexpr std::uint64_t kMaxBlocks = 1u << 24;
constexpr std::uint32_t kMaxTp = 1u << 16;

void header(detail::ByteWriter& w, const char (&magic)[4]) {
  w.raw(magic, 4);
  w.u8(kVersion);
}

void groups(detail::ByteWriter& w, const TpGroups& g) {
  w.u32(g.kv_heads);
  w.u32(g.prefill_tp);
  w.u32(g.decode_tp);
  w.u8(g.mla ? 1 : 0);
}

TpGroups read_groups(detail::ByteReader& r) {
  TpGroups g;
  g.kv_heads = r.u32();
  g.prefill_tp = r.u32();
  g.decode_tp = r.u32();
  g.mla = r.u8() != 0;
  return g;
}

bool groups_sane(const TpGroups& g) {
  return g.kv_heads > 0 && g.kv_heads < kMaxTp && g.prefill_tp > 0 && g.prefill_tp <= kMaxTp && g.decode_tp > 0 &&
         g.decode_tp <= kMaxTp;
}

void request_id(detail::ByteWriter& w, std::string_view id) {
  w.u16(static_cast<std::uint16_t>(id.size()));
  w.str(id);
}

std::string read_request_id(detail::ByteReader& r) {
  const std::uint16_t n = r.u16();
  if (n > kMaxRequestIdBytes) return r.str(r.remaining() + 1);  // latches the error
  return r.str(n);
}

std::span<const std::uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

Status corrupt(const char* what) { return Corrupt(std::string("tp message: malformed ") + what); }

Result<TpMessage> decode_ask(detail::ByteReader& r) {
  TpMessage m;
  m.kind = TpMessage::Kind::kAsk;
  TpAsk& a = m.ask;
  a.request = read_request_id(r);
  const std::uint8_t path = r.u8();
  a.decode_rank = r.u32();
  a.receiver_instance = r.u64();
  a.groups = read_groups(r);
  a.tokens = r.u64();
  a.share.prefill_rank = r.u32();
  a.share.decode_rank = a.decode_rank;
  a.share.heads.first = r.u32();
  a.share.heads.count = r.u32();
  a.share.source_head_offset = r.u32();
  a.share.destination_head_offset = r.u32();
  a.decode_heads = r.u32();
  a.slot_address = r.u64();
  a.slot_bytes = r.u64();
  const std::uint8_t kind = r.u8();
  a.slot_device = r.u32();
  const std::uint32_t runs = r.u32();
  if (!r.ok() || runs > r.remaining() / 8) return corrupt("ask (truncated)");
  std::uint64_t blocks = 0;
  a.block_runs.reserve(runs);
  for (std::uint32_t i = 0; i < runs; ++i) {
    const std::uint32_t first = r.u32();
    const std::uint32_t count = r.u32();
    blocks += count;
    if (count == 0 || std::uint64_t{first} + count > (1ull << 32) || blocks > kMaxBlocks) return corrupt("ask block runs");
    a.block_runs.emplace_back(first, count);
  }
  if (!r.ok() || r.remaining() != 0) return corrupt("ask (length)");
  if (path < 1 || path > 3 || kind > 1 || !groups_sane(a.groups) || a.tokens == 0 || a.share.heads.count == 0 ||
      a.decode_heads == 0 || a.decode_rank >= a.groups.decode_tp || a.share.prefill_rank >= a.groups.prefill_tp) {
    return corrupt("ask (fields out of range)");
  }
  a.path = static_cast<TpPath>(path);
  a.slot_kind = static_cast<MemoryKind>(kind);
  return m;
}

Result<TpMessage> decode_landed(detail::ByteReader& r) {
  TpMessage m;
  m.kind = TpMessage::Kind::kLanded;
  TpLanded& l = m.landed;
  l.request = read_request_id(r);
  l.prefill_rank = r.u32();
  l.sender_instance = r.u64();
  l.first_token = r.u64();
  l.tokens = r.u64();
  l.heads.first = r.u32();
  l.heads.count = r.u32();
  if (!r.ok() || r.remaining() != 0) return corrupt("landed notification");
  if (l.tokens == 0 || l.heads.count == 0 || l.first_token + l.tokens < l.first_token) {
    return corrupt("landed notification (fields out of range)");
  }
  return m;
}

Result<TpMessage> decode_refusal(detail::ByteReader& r) {
  TpMessage m;
  m.kind = TpMessage::Kind::kRefusal;
  m.refusal.request = read_request_id(r);
  m.refusal.sender_instance = r.u64();
  const std::uint16_t n = r.u16();
  m.refusal.reason = r.str(n);
  if (!r.ok() || r.remaining() != 0) return corrupt("refusal");
  return m;
}

}  // namespace

std::vector<std::uint8_t> encode(const EndpointInfo& info) {
  detail::ByteWriter w;
  header(w, kEndpointMagic);
  w.u8(static_cast<std::uint8_t>(info.role));
  groups(w, info.groups);
  w.u32(info.rank);
  w.u64(info.instance);
  w.u64(info.heartbeat_address);
  return w.take();
}

Result<EndpointInfo> decode_endpoint(std::span<const std::uint8_t> bytes) {
  detail::ByteReader r(bytes);
  const auto magic = r.take(4);
  if (!r.ok() || std::memcmp(magic.data(), kEndpointMagic, 4) != 0) return Corrupt("kv.tp entry: bad magic");
  const std::uint8_t version = r.u8();
  if (r.ok() && version != kVersion) {
    return Corrupt("kv.tp entry: version " + std::to_string(version) + " is not known to this build (it reads " +
                   std::to_string(kVersion) + ")");
  }
  EndpointInfo info;
  const std::uint8_t role = r.u8();
  info.groups = read_groups(r);
  info.rank = r.u32();
  info.instance = r.u64();
  info.heartbeat_address = r.u64();
  if (!r.ok() || r.remaining() != 0) return Corrupt("kv.tp entry: truncated or too long");
  if (role > 1 || !groups_sane(info.groups)) return Corrupt("kv.tp entry: fields out of range");
  info.role = static_cast<Role>(role);
  const std::uint32_t tp = info.role == Role::kPrefill ? info.groups.prefill_tp : info.groups.decode_tp;
  if (info.rank >= tp) return Corrupt("kv.tp entry: rank " + std::to_string(info.rank) + " of TP " + std::to_string(tp));
  return info;
}

std::vector<std::uint8_t> encode(const TpAsk& a) {
  detail::ByteWriter w;
  header(w, kAskMagic);
  request_id(w, a.request);
  w.u8(static_cast<std::uint8_t>(a.path));
  w.u32(a.decode_rank);
  w.u64(a.receiver_instance);
  groups(w, a.groups);
  w.u64(a.tokens);
  w.u32(a.share.prefill_rank);
  w.u32(a.share.heads.first);
  w.u32(a.share.heads.count);
  w.u32(a.share.source_head_offset);
  w.u32(a.share.destination_head_offset);
  w.u32(a.decode_heads);
  w.u64(a.slot_address);
  w.u64(a.slot_bytes);
  w.u8(static_cast<std::uint8_t>(a.slot_kind));
  w.u32(a.slot_device);
  w.u32(static_cast<std::uint32_t>(a.block_runs.size()));
  for (const auto& [first, count] : a.block_runs) {
    w.u32(first);
    w.u32(count);
  }
  return w.take();
}

std::vector<std::uint8_t> encode(const TpLanded& l) {
  detail::ByteWriter w;
  header(w, kLandedMagic);
  request_id(w, l.request);
  w.u32(l.prefill_rank);
  w.u64(l.sender_instance);
  w.u64(l.first_token);
  w.u64(l.tokens);
  w.u32(l.heads.first);
  w.u32(l.heads.count);
  return w.take();
}

std::vector<std::uint8_t> encode(const TpRefusal& x) {
  detail::ByteWriter w;
  header(w, kRefusalMagic);
  request_id(w, x.request);
  w.u64(x.sender_instance);
  const std::string_view reason = std::string_view(x.reason).substr(0, 4096);
  w.u16(static_cast<std::uint16_t>(reason.size()));
  w.str(reason);
  return w.take();
}

std::optional<Result<TpMessage>> decode_message(std::string_view text) {
  if (text.size() < 5 || text.substr(0, 3) != "KVT") return std::nullopt;
  detail::ByteReader r(bytes_of(text));
  const auto magic = r.take(4);
  const auto is = [&](const char (&m)[4]) { return std::memcmp(magic.data(), m, 4) == 0; };
  if (!is(kAskMagic) && !is(kLandedMagic) && !is(kRefusalMagic)) return std::nullopt;
  const std::uint8_t version = r.u8();
  if (version != kVersion) {
    return Result<TpMessage>(Corrupt("tp message version " + std::to_string(version) + " is not known to this build"));
  }
  if (is(kAskMagic)) return decode_ask(r);
  if (is(kLandedMagic)) return decode_landed(r);
  return decode_refusal(r);
}

std::string as_string(const std::vector<std::uint8_t>& bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

std::vector<std::pair<std::uint32_t, std::uint32_t>> to_runs(std::span<const std::uint32_t> blocks) {
  std::vector<std::pair<std::uint32_t, std::uint32_t>> runs;
  for (std::uint32_t b : blocks) {
    if (!runs.empty() && std::uint64_t{runs.back().first} + runs.back().second == b) {
      ++runs.back().second;
    } else {
      runs.emplace_back(b, 1);
    }
  }
  return runs;
}

std::vector<std::uint32_t> from_runs(std::span<const std::pair<std::uint32_t, std::uint32_t>> runs) {
  std::vector<std::uint32_t> blocks;
  for (const auto& [first, count] : runs) {
    for (std::uint32_t i = 0; i < count; ++i) blocks.push_back(first + i);
  }
  return blocks;
}

}  // namespace kvferry::tp
