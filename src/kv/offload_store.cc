// KV offload and onboard (kvferry/kv/offload.h): the store's life cycle around agent
// transfers between the pool and the store's data file.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <numeric>
#include <optional>
#include <set>

#include "kv/offload_plan.h"

namespace kvferry {

namespace {

using Clock = std::chrono::steady_clock;
using detail::BlockLists;
using detail::StoreIndex;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The faster path for GPU pools on the lent H200 machine (docs/benchmarks.md "Storage
// tier", 2026-11-21): staging with a 16 MiB buffer, durable offload 2.78 GB/s and cold
// onboard 3.01 GB/s, against cuFile (compatibility mode) 2.65 and 2.93 at best.
constexpr KvVramPath kMeasuredFasterVramPath = KvVramPath::kStaging;

enum class Path { kFile, kGds, kStaging };
const char* path_name(Path p) { return p == Path::kFile ? "file" : p == Path::kGds ? "gds" : "staging"; }

bool runs(const Agent& agent, const char* backend) {
  const auto names = agent.backends();
  return std::find(names.begin(), names.end(), backend) != names.end();
}

// kAuto chose gds, and gds refused before moving anything (e.g. cuFile cannot use the
// store's file system): staging can take over.
bool may_fall_back(const Agent& agent, Path path, const KvStoreOptions& options) {
  return path == Path::kGds && options.vram_path == KvVramPath::kAuto && runs(agent, "file") &&
         detail::staging_unavailable_reason().empty();
}

Result<Path> choose_path(const Agent& agent, const KvPoolView& pool, KvVramPath wanted) {
  if (pool.kind == MemoryKind::kDram) {
    if (!runs(agent, "file"))
      return Unavailable("KV store: agent '" + agent.name() + "' does not run the file backend");
    return Path::kFile;
  }
  if (pool.kind != MemoryKind::kVram)
    return InvalidArgument("KV store: the pool must be dram or vram memory");
  const bool gds = runs(agent, "gds");
  const std::string staging_why =
      runs(agent, "file") ? detail::staging_unavailable_reason() : "the agent does not run the file backend";
  const bool staging = staging_why.empty();
  if (wanted == KvVramPath::kAuto) wanted = kMeasuredFasterVramPath;
  if (wanted == KvVramPath::kGds && gds) return Path::kGds;
  if (wanted == KvVramPath::kStaging && staging) return Path::kStaging;
  if (gds) return Path::kGds;
  if (staging) return Path::kStaging;
  return Unavailable(
      "KV store: no path for GPU memory here (gds: the agent does not run it; staging: " + staging_why + ")");
}

// Registers the store's data file for the duration of one call.
class DataFile {
 public:
  static Result<DataFile> open(Agent& agent, const std::string& path, const FileOpenOptions& options) {
    KVF_ASSIGN_OR_RETURN(FileRegistration reg, agent.register_file(path, options));
    return DataFile(agent, reg);
  }
  DataFile(DataFile&& o) noexcept : agent_(o.agent_), reg_(o.reg_) { o.agent_ = nullptr; }
  DataFile& operator=(DataFile&&) = delete;
  ~DataFile() {
    if (agent_) agent_->deregister_file(reg_.id).ok();
  }
  const FileRegistration& reg() const { return reg_; }

 private:
  DataFile(Agent& agent, FileRegistration reg) : agent_(&agent), reg_(std::move(reg)) {}
  Agent* agent_;
  FileRegistration reg_;
};

// One transfer between the lists (or a slice of whole blocks of them).
Result<TransferRequest> post_slice(Agent& agent, TransferOp op, const BlockLists& lists, std::size_t from,
                                   std::size_t to, const std::string& backend) {
  DescriptorList mem(lists.memory.kind()), file(MemoryKind::kFile);
  for (std::size_t i = from; i < to; ++i) {
    mem.add(lists.memory[i]);
    file.add(lists.file[i]);
  }
  TransferOptions o;
  o.backend = backend;
  KVF_ASSIGN_OR_RETURN(TransferRequest t, agent.create_transfer(op, mem, agent.name(), file, o));
  KVF_RETURN_IF_ERROR(t.post());
  return t;
}

// The whole transfer on the direct path (gds, or file for a host pool). When kAuto chose
// gds and gds refuses before moving anything, `path` becomes kStaging and nothing is
// returned: the caller stages instead.
Result<std::optional<TransferRequest>> post_direct(Agent& agent, TransferOp op, const BlockLists& lists,
                                                   const KvStoreOptions& options, Path& path) {
  auto t = post_slice(agent, op, lists, 0, lists.memory.size(), path == Path::kGds ? "gds" : "file");
  if (t.ok()) return std::optional<TransferRequest>(std::move(t).value());
  if (!may_fall_back(agent, path, options)) return t.status();
  path = Path::kStaging;
  return std::optional<TransferRequest>();
}

Status fdatasync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoErrorFromErrno("opening '" + path + "' to sync it", errno);
  const int r = ::fdatasync(fd);
  const int err = errno;
  ::close(fd);
  return r == 0 ? Status::Ok() : IoErrorFromErrno("fdatasync '" + path + "'", err);
}

Status checksum_mismatch(const std::string& dir, std::uint32_t entry, std::uint32_t block) {
  return Corrupt("store '" + dir + "': entry " + std::to_string(entry) + " onboarded into block " +
                 std::to_string(block) + " does not match its checksum (the data file was damaged)");
}

}  // namespace

Result<KvStoreResult> offload_blocks(Agent& agent, const KvPoolView& pool,
                                     std::span<const std::uint32_t> blocks, const std::string& directory,
                                     const KvStoreOptions& options) {
  const auto t0 = Clock::now();
  if (blocks.empty()) return InvalidArgument("offload_blocks: no blocks");
  KVF_ASSIGN_OR_RETURN(Path path, choose_path(agent, pool, options.vram_path));
  KVF_ASSIGN_OR_RETURN(auto shape, detail::block_shape(pool));
  StoreIndex index;
  index.geometry = pool.geometry;
  index.segment_bytes = shape;
  index.sources.assign(blocks.begin(), blocks.end());
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  if (ec) return IoError("offload_blocks: creating '" + directory + "': " + ec.message());
  auto existing = detail::read_store_index(directory);
  if (existing.ok() || existing.status().code() == StatusCode::kCorrupt) {
    if (!options.overwrite)
      return AlreadyExists("offload_blocks: '" + directory + "' already holds a store (set overwrite)");
    KVF_RETURN_IF_ERROR(detail::retract_store_index(directory));  // incomplete from here on
  }
  const std::string data_path = directory + "/" + detail::kStoreDataName;
  FileOpenOptions fo;
  fo.create = true;  // an overwritten store reuses its data file's blocks (the index is gone)
  fo.capacity = index.block_bytes() * blocks.size();
  KVF_ASSIGN_OR_RETURN(DataFile data, DataFile::open(agent, data_path, fo));
  std::vector<std::uint32_t> entries(blocks.size());
  std::iota(entries.begin(), entries.end(), 0u);
  KVF_ASSIGN_OR_RETURN(BlockLists lists, detail::block_lists(pool, shape, blocks, entries, data.reg().id));

  KvStoreResult result;
  result.bytes = fo.capacity;
  const auto io0 = Clock::now();
  std::optional<TransferRequest> direct;
  if (path != Path::kStaging) {
    KVF_ASSIGN_OR_RETURN(direct, post_direct(agent, TransferOp::kWrite, lists, options, path));
  }
  result.path = path_name(path);
  if (path == Path::kStaging) {
    detail::StagingJob job{&agent,         &pool, &lists, shape.size(), data.reg().id, options.staging_bytes,
                           options.timeout};
    KVF_RETURN_IF_ERROR(detail::staged_offload(job, options.checksums ? &index.checksums : nullptr));
  } else {
    TransferRequest& t = *direct;
    // Host memory: hash the blocks while the io thread writes them.
    if (options.checksums && path == Path::kFile)
      for (std::size_t b = 0; b < blocks.size(); ++b)
        index.checksums.push_back(detail::block_checksum(lists.memory, lists.first[b], shape.size()));
    KVF_RETURN_IF_ERROR(t.wait(options.timeout).with_context("offload to '" + directory + "'"));
  }
  result.io_seconds = seconds_since(io0);
  if (options.sync) KVF_RETURN_IF_ERROR(fdatasync_path(data_path));
  KVF_RETURN_IF_ERROR(detail::commit_store_index(directory, index, options.sync));
  result.store = index.info(directory);
  result.seconds = seconds_since(t0);
  return result;
}

Result<KvStoreResult> onboard_blocks(Agent& agent, const KvPoolView& pool, const std::string& directory,
                                     std::span<const std::uint32_t> blocks,
                                     std::span<const std::uint32_t> entries, const KvStoreOptions& options) {
  const auto t0 = Clock::now();
  KVF_ASSIGN_OR_RETURN(Path path, choose_path(agent, pool, options.vram_path));
  KVF_ASSIGN_OR_RETURN(StoreIndex index, detail::read_store_index(directory));
  if (index.geometry != pool.geometry)
    return InvalidArgument("onboard_blocks: store '" + directory + "' holds geometry '" + index.geometry +
                           "', the pool has '" + pool.geometry + "'");
  KVF_ASSIGN_OR_RETURN(auto shape, detail::block_shape(pool));
  if (shape != index.segment_bytes)
    return InvalidArgument(
        "onboard_blocks: the pool's blocks are cut into other segments than the store's (" +
        std::to_string(shape.size()) + " vs " + std::to_string(index.segment_bytes.size()) +
        " segments per block)");
  std::vector<std::uint32_t> all;
  if (entries.empty()) {
    all.resize(index.sources.size());
    std::iota(all.begin(), all.end(), 0u);
    entries = all;
  }
  if (entries.size() != blocks.size())
    return InvalidArgument("onboard_blocks: " + std::to_string(entries.size()) + " store entries but " +
                           std::to_string(blocks.size()) + " destination blocks");
  for (std::uint32_t e : entries)
    if (e >= index.sources.size())
      return OutOfRange("onboard_blocks: entry " + std::to_string(e) + " but the store holds " +
                        std::to_string(index.sources.size()));
  if (std::set<std::uint32_t>(blocks.begin(), blocks.end()).size() != blocks.size())
    return InvalidArgument("onboard_blocks: a destination block appears twice");
  FileOpenOptions fo;
  fo.read_only = true;
  KVF_ASSIGN_OR_RETURN(DataFile data, DataFile::open(agent, directory + "/" + detail::kStoreDataName, fo));
  KVF_ASSIGN_OR_RETURN(BlockLists lists, detail::block_lists(pool, shape, blocks, entries, data.reg().id));
  const bool verify = options.verify && !index.checksums.empty();
  std::vector<std::uint64_t> expected;
  if (verify)
    for (std::uint32_t e : entries) expected.push_back(index.checksums[e]);

  KvStoreResult result;
  result.bytes = index.block_bytes() * blocks.size();
  const auto io0 = Clock::now();
  std::optional<TransferRequest> direct;
  if (path == Path::kGds) {
    KVF_ASSIGN_OR_RETURN(direct, post_direct(agent, TransferOp::kRead, lists, options, path));
  }
  result.path = path_name(path);
  if (path == Path::kStaging) {
    detail::StagingJob job{&agent,         &pool, &lists, shape.size(), data.reg().id, options.staging_bytes,
                           options.timeout};
    Status s = detail::staged_onboard(job, verify ? &expected : nullptr);
    if (s.code() == StatusCode::kCorrupt) return Corrupt("store '" + directory + "': " + s.message());
    KVF_RETURN_IF_ERROR(s);
    result.verified = verify;
  } else if (path == Path::kGds) {  // (GPU memory cannot be hashed here)
    KVF_RETURN_IF_ERROR(direct->wait(options.timeout).with_context("onboard from '" + directory + "'"));
  } else if (!verify) {
    KVF_ASSIGN_OR_RETURN(TransferRequest t,
                         post_slice(agent, TransferOp::kRead, lists, 0, lists.memory.size(), "file"));
    KVF_RETURN_IF_ERROR(t.wait(options.timeout).with_context("onboard from '" + directory + "'"));
  } else {
    // Several requests in flight; each slice is hashed as soon as it landed, while the
    // io thread reads the next ones.
    const std::size_t slices = std::min<std::size_t>(8, blocks.size());
    std::vector<TransferRequest> requests;
    std::vector<std::size_t> bounds;
    for (std::size_t s = 0; s <= slices; ++s) bounds.push_back(blocks.size() * s / slices);
    for (std::size_t s = 0; s < slices; ++s) {
      const std::size_t to =
          bounds[s + 1] == blocks.size() ? lists.memory.size() : lists.first[bounds[s + 1]];
      KVF_ASSIGN_OR_RETURN(TransferRequest t,
                           post_slice(agent, TransferOp::kRead, lists, lists.first[bounds[s]], to, "file"));
      requests.push_back(std::move(t));
    }
    for (std::size_t s = 0; s < slices; ++s) {
      KVF_RETURN_IF_ERROR(requests[s].wait(options.timeout).with_context("onboard from '" + directory + "'"));
      for (std::size_t b = bounds[s]; b < bounds[s + 1]; ++b)
        if (detail::block_checksum(lists.memory, lists.first[b], shape.size()) != expected[b])
          return checksum_mismatch(directory, entries[b], blocks[b]);
    }
    result.verified = true;
  }
  result.io_seconds = seconds_since(io0);
  result.store = index.info(directory);
  result.seconds = seconds_since(t0);
  return result;
}

Result<KvStoreInfo> inspect_store(const std::string& directory) {
  KVF_ASSIGN_OR_RETURN(StoreIndex index, detail::read_store_index(directory));
  return index.info(directory);
}

}  // namespace kvferry
