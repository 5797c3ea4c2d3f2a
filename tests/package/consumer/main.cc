// Uses the installed library through its public headers only: creates an Agent,
// registers and deregisters a buffer, prints the version. Exit 0 means it all worked.
#include <kvferry/kvferry.h>

#include <cstdio>
#include <memory>
#include <vector>

int main() {
  kvferry::AgentOptions options;
  options.name = "package-consumer";
  kvferry::Result<std::unique_ptr<kvferry::Agent>> agent = kvferry::Agent::create(options);
  if (!agent.ok()) {
    std::fprintf(stderr, "Agent::create: %s\n", agent.status().to_string().c_str());
    return 1;
  }

  std::vector<unsigned char> buffer(64 * 1024, 0x5a);
  kvferry::DescriptorList regions(kvferry::MemoryKind::kDram);
  regions.add(kvferry::make_descriptor(buffer.data(), buffer.size()));
  if (kvferry::Status s = (*agent)->register_memory(regions); !s.ok()) {
    std::fprintf(stderr, "register_memory: %s\n", s.to_string().c_str());
    return 1;
  }
  if (kvferry::Status s = (*agent)->deregister_memory(regions); !s.ok()) {
    std::fprintf(stderr, "deregister_memory: %s\n", s.to_string().c_str());
    return 1;
  }

  std::printf("kvferry %s: agent '%s' registered %zu bytes\n", kvferry::version_string(),
              (*agent)->name().c_str(), buffer.size());
  return 0;
}
