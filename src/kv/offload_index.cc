#include "kv/offload_index.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>

#include "core/byte_io.h"

namespace kvferry::detail {
namespace {

constexpr char kMagic[8] = {'K', 'V', 'F', 'S', 'T', 'O', 'R', 'E'};
constexpr std::uint32_t kVersion = 1;
constexpr std::uint32_t kFlagChecksums = 1;
constexpr std::uint32_t kMaxGeometryBytes = 1 << 16;
constexpr std::uint32_t kMaxSegments = 1 << 20;
constexpr std::size_t kMaxIndexBytes = 1u << 30;

std::string join(const std::string& dir, const char* name) { return dir + "/" + name; }

Status fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return IoErrorFromErrno("opening '" + path + "' to sync it", errno);
  const int r = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (r != 0) return IoErrorFromErrno("fsync '" + path + "'", err);
  return Status::Ok();
}

Status write_all(int fd, const std::vector<std::uint8_t>& bytes, const std::string& path) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoErrorFromErrno("writing '" + path + "'", errno);
    if (n == 0) return IoError("writing '" + path + "': no progress");
    done += static_cast<std::size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

std::uint64_t StoreIndex::block_bytes() const {
  std::uint64_t sum = 0;
  for (std::uint64_t s : segment_bytes) sum += s;
  return sum;
}

KvStoreInfo StoreIndex::info(const std::string& directory) const {
  KvStoreInfo i;
  i.directory = directory;
  i.geometry = geometry;
  i.segment_bytes = segment_bytes;
  i.block_bytes = block_bytes();
  i.source_blocks = sources;
  i.checksums = !checksums.empty();
  return i;
}

std::vector<std::uint8_t> encode_store_index(const StoreIndex& index) {
  ByteWriter w;
  w.raw(kMagic, sizeof kMagic);
  w.u32(kVersion);
  w.u32(index.checksums.empty() ? 0 : kFlagChecksums);
  w.u32(static_cast<std::uint32_t>(index.geometry.size()));
  w.str(index.geometry);
  w.u32(static_cast<std::uint32_t>(index.segment_bytes.size()));
  for (std::uint64_t s : index.segment_bytes) w.u64(s);
  w.u32(static_cast<std::uint32_t>(index.sources.size()));
  for (std::uint32_t b : index.sources) w.u32(b);
  for (std::uint64_t c : index.checksums) w.u64(c);
  w.u64(XXH3_64bits(w.buffer().data(), w.size()));
  return w.take();
}

Result<StoreIndex> decode_store_index(const std::vector<std::uint8_t>& bytes) {
  if (bytes.size() < sizeof kMagic + 8 || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
    return Corrupt("store index: not a kvferry store index (bad magic)");
  std::uint64_t trailer = 0;
  std::memcpy(&trailer, bytes.data() + bytes.size() - 8, 8);
  if (XXH3_64bits(bytes.data(), bytes.size() - 8) != trailer)
    return Corrupt("store index: checksum mismatch (the index is damaged or was cut short)");
  ByteReader r(std::span<const std::uint8_t>(bytes.data(), bytes.size() - 8));
  r.take(sizeof kMagic);
  const std::uint32_t version = r.u32();
  if (r.ok() && version != kVersion)
    return Corrupt("store index: version " + std::to_string(version) +
                   " is not known to this kvferry (knows 1)");
  const std::uint32_t flags = r.u32();
  StoreIndex index;
  const std::uint32_t geometry_len = r.u32();
  if (geometry_len > kMaxGeometryBytes) return Corrupt("store index: geometry too long");
  index.geometry = r.str(geometry_len);
  const std::uint32_t segments = r.u32();
  if (!r.ok() || segments == 0 || segments > kMaxSegments || segments > r.remaining() / 8)
    return Corrupt("store index: bad segment count");
  for (std::uint32_t i = 0; i < segments; ++i) {
    index.segment_bytes.push_back(r.u64());
    if (index.segment_bytes.back() == 0) return Corrupt("store index: a segment of zero bytes");
  }
  const std::uint32_t blocks = r.u32();
  const std::size_t per_block = (flags & kFlagChecksums) ? 12 : 4;
  if (!r.ok() || blocks == 0 || blocks > r.remaining() / per_block)
    return Corrupt("store index: bad block count");
  for (std::uint32_t i = 0; i < blocks; ++i) index.sources.push_back(r.u32());
  if (flags & kFlagChecksums)
    for (std::uint32_t i = 0; i < blocks; ++i) index.checksums.push_back(r.u64());
  if (!r.ok() || r.remaining() != 0) return Corrupt("store index: trailing or missing bytes");
  std::uint64_t sum = 0;
  for (std::uint64_t s : index.segment_bytes) {
    if (s > (std::uint64_t{1} << 40) || sum + s < sum) return Corrupt("store index: block too large");
    sum += s;
  }
  return index;
}

Result<StoreIndex> read_store_index(const std::string& directory) {
  const std::string path = join(directory, kStoreIndexName);
  const std::string data = join(directory, kStoreDataName);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    struct stat st {};
    if (err == ENOENT && ::stat(data.c_str(), &st) == 0)
      return FailedPrecondition("incomplete store '" + directory +
                                "': data without a committed index (its writer crashed or has not finished)");
    if (err == ENOENT) return NotFound("no store in '" + directory + "' (no " + kStoreIndexName + ")");
    return IoErrorFromErrno("opening '" + path + "'", err);
  }
  std::vector<std::uint8_t> bytes;
  std::uint8_t buf[1 << 16];
  Status status;
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) status = IoErrorFromErrno("reading '" + path + "'", errno);
    if (n <= 0) break;
    bytes.insert(bytes.end(), buf, buf + n);
    if (bytes.size() > kMaxIndexBytes) {
      status = Corrupt("store index '" + path + "' is larger than 1 GiB");
      break;
    }
  }
  ::close(fd);
  KVF_RETURN_IF_ERROR(status);
  auto index = decode_store_index(bytes);
  if (!index.ok()) return index.status().with_context("'" + path + "'");
  struct stat st {};
  if (::stat(data.c_str(), &st) != 0) return Corrupt("store '" + directory + "': the index has no data file");
  const std::uint64_t need = index->block_bytes() * index->sources.size();
  if (static_cast<std::uint64_t>(st.st_size) < need)
    return Corrupt("store '" + directory + "' is truncated: " + kStoreDataName + " holds " +
                   std::to_string(st.st_size) + " bytes, the index needs " + std::to_string(need));
  return index;
}

Status commit_store_index(const std::string& directory, const StoreIndex& index, bool sync) {
  const std::string tmp = join(directory, "kvstore.index.tmp");
  const std::string path = join(directory, kStoreIndexName);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return IoErrorFromErrno("creating '" + tmp + "'", errno);
  Status s = write_all(fd, encode_store_index(index), tmp);
  if (s.ok() && sync && ::fsync(fd) != 0) s = IoErrorFromErrno("fsync '" + tmp + "'", errno);
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0)
    s = IoErrorFromErrno("renaming '" + tmp + "'", errno);
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return sync ? fsync_path(directory, true) : Status::Ok();
}

Status retract_store_index(const std::string& directory) {
  const std::string path = join(directory, kStoreIndexName);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return IoErrorFromErrno("removing '" + path + "'", errno);
  return fsync_path(directory, true);
}

}  // namespace kvferry::detail
