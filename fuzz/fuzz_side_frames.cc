// A side-channel byte stream (core/side_channel.h) as a server reads it: frames split
// from the stream, notify payloads and pushed metadata parsed; never a crash, never a
// frame past the cap or past the bytes received.
#include <cstdlib>

#include "core/metadata.h"
#include "core/side_channel.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kvferry::detail;
  std::span<const std::uint8_t> in(data, size);
  for (int frames = 0; frames < 64; ++frames) {
    auto f = next_side_frame(in);
    if (!f.ok() || !*f) break;
    const SideFrameView& v = **f;
    if (v.bytes > in.size() || v.payload.size() > kMaxSideFrameBytes || v.bytes != kSideHeaderBytes + v.payload.size())
      std::abort();
    if (v.type == static_cast<std::uint16_t>(SideFrame::kNotify)) {
      auto note = parse_notify_payload(v.payload);
      if (note.ok() && note->first.size() + note->second.size() + 2 != v.payload.size()) std::abort();
    } else if (!v.payload.empty()) {
      (void)decode_metadata(v.payload);
    }
    in = in.subspan(v.bytes);
  }
  return 0;
}
