// The staging path of GPU pools: blocks are copied between the GPU and a pinned host
// buffer (two halves), and the file backend moves the halves; copies of one half overlap
// the file I/O of the other.
#include <algorithm>
#include <optional>
#include <string>

#include "core/cuda_driver.h"
#include "kv/offload_plan.h"

namespace kvferry::detail {
namespace {

class Staging {
 public:
  static Result<std::unique_ptr<Staging>> create(Agent& agent, const CudaDriver& cuda, std::uint64_t bytes) {
    std::unique_ptr<Staging> s(new Staging(agent, cuda));
    void* p = nullptr;
    KVF_RETURN_IF_ERROR(
        cuda.check(cuda.cuMemHostAlloc(&p, bytes, kCuMemHostAllocPortable), "cuMemHostAlloc"));
    s->base_ = static_cast<std::uint8_t*>(p);
    s->bytes_ = bytes;
    KVF_RETURN_IF_ERROR(cuda.check(cuda.cuStreamCreate(&s->stream_, kCuStreamNonBlocking), "cuStreamCreate"));
    KVF_RETURN_IF_ERROR(agent.register_memory(s->region()));
    s->registered_ = true;
    return s;
  }
  ~Staging() {
    if (registered_) agent_.deregister_memory(region()).ok();
    if (stream_) cuda_.cuStreamDestroy(stream_);
    if (base_) cuda_.cuMemFreeHost(base_);
  }
  std::uint8_t* half(int h) const { return base_ + static_cast<std::uint64_t>(h) * (bytes_ / 2); }
  CUstream stream() const { return stream_; }

 private:
  Staging(Agent& agent, const CudaDriver& cuda) : agent_(agent), cuda_(cuda) {}
  DescriptorList region() const {
    return DescriptorList(MemoryKind::kDram, {make_descriptor(base_, bytes_)});
  }
  Agent& agent_;
  const CudaDriver& cuda_;
  std::uint8_t* base_ = nullptr;
  std::uint64_t bytes_ = 0;
  CUstream stream_ = nullptr;
  bool registered_ = false;
};

struct Plan {
  const CudaDriver* cuda = nullptr;
  std::unique_ptr<Staging> staging;
  std::size_t blocks = 0;
  std::size_t per_group = 0;  // blocks per half
  std::uint64_t block_bytes = 0;
};

Result<Plan> make_plan(const StagingJob& job) {
  Plan p;
  KVF_ASSIGN_OR_RETURN(p.cuda, CudaDriver::get());
  p.blocks = job.lists->first.size();
  for (std::size_t i = 0; i < job.segments_per_block; ++i) p.block_bytes += job.lists->memory[i].length;
  p.per_group = std::max<std::uint64_t>(1, job.staging_bytes / 2 / p.block_bytes);
  p.per_group = std::min(p.per_group, p.blocks);
  KVF_ASSIGN_OR_RETURN(p.staging, Staging::create(*job.agent, *p.cuda, 2 * p.per_group * p.block_bytes));
  return p;
}

// The file transfer of group `g` between half `h` and the group's file descriptors.
Result<TransferRequest> post_group(const StagingJob& job, const Plan& p, std::size_t g, int h,
                                   TransferOp op) {
  const std::size_t b0 = g * p.per_group, b1 = std::min(p.blocks, b0 + p.per_group);
  const std::size_t s0 = job.lists->first[b0];
  const std::size_t s1 = b1 == p.blocks ? job.lists->file.size() : job.lists->first[b1];
  DescriptorList mem(MemoryKind::kDram), file(MemoryKind::kFile);
  std::uint64_t off = 0;
  for (std::size_t i = s0; i < s1; ++i) {
    mem.add(make_descriptor(p.staging->half(h) + off, job.lists->file[i].length));
    file.add(job.lists->file[i]);
    off += job.lists->file[i].length;
  }
  TransferOptions o;
  o.backend = "file";
  KVF_ASSIGN_OR_RETURN(TransferRequest t, job.agent->create_transfer(op, mem, job.agent->name(), file, o));
  KVF_RETURN_IF_ERROR(t.post());
  return t;
}

// Copies group `g` between its GPU segments and half `h`, and waits for the copies.
Status copy_group(const StagingJob& job, const Plan& p, std::size_t g, int h, bool to_host) {
  const std::size_t b0 = g * p.per_group, b1 = std::min(p.blocks, b0 + p.per_group);
  const std::size_t s0 = job.lists->first[b0];
  const std::size_t s1 = b1 == p.blocks ? job.lists->memory.size() : job.lists->first[b1];
  std::uint8_t* host = p.staging->half(h);
  for (std::size_t i = s0; i < s1; ++i) {
    const Descriptor& d = job.lists->memory[i];
    const CUresult r = to_host ? p.cuda->cuMemcpyDtoHAsync(host, d.address, d.length, p.staging->stream())
                               : p.cuda->cuMemcpyHtoDAsync(d.address, host, d.length, p.staging->stream());
    KVF_RETURN_IF_ERROR(p.cuda->check(r, to_host ? "cuMemcpyDtoHAsync" : "cuMemcpyHtoDAsync"));
    host += d.length;
  }
  return p.cuda->check(p.cuda->cuStreamSynchronize(p.staging->stream()), "cuStreamSynchronize");
}

std::uint64_t staged_checksum(const Plan& p, int h, std::size_t k) {
  DescriptorList one(MemoryKind::kDram,
                     {make_descriptor(p.staging->half(h) + k * p.block_bytes, p.block_bytes)});
  return block_checksum(one, 0, 1);
}

}  // namespace

std::string staging_unavailable_reason() {
  auto cuda = CudaDriver::get();
  return cuda.ok() ? std::string() : cuda.status().message();
}

Status staged_offload(const StagingJob& job, std::vector<std::uint64_t>* checksums) {
  KVF_ASSIGN_OR_RETURN(const CudaDriver* cuda, CudaDriver::get());
  CudaDriver::Scope scope(*cuda, static_cast<int>(job.pool->device));  // outlives the plan's buffers
  KVF_RETURN_IF_ERROR(scope.status());
  KVF_ASSIGN_OR_RETURN(Plan p, make_plan(job));
  const std::size_t groups = (p.blocks + p.per_group - 1) / p.per_group;
  std::optional<TransferRequest> writing[2];
  for (std::size_t g = 0; g < groups; ++g) {
    const int h = static_cast<int>(g % 2);
    if (writing[h]) KVF_RETURN_IF_ERROR(writing[h]->wait(job.timeout));  // its half is free again
    KVF_RETURN_IF_ERROR(copy_group(job, p, g, h, true));
    if (checksums)
      for (std::size_t b = g * p.per_group, k = 0; b < std::min(p.blocks, (g + 1) * p.per_group); ++b, ++k)
        checksums->push_back(staged_checksum(p, h, k));
    KVF_ASSIGN_OR_RETURN(TransferRequest t, post_group(job, p, g, h, TransferOp::kWrite));
    writing[h].emplace(std::move(t));
  }
  for (auto& w : writing)
    if (w) KVF_RETURN_IF_ERROR(w->wait(job.timeout));
  return Status::Ok();
}

Status staged_onboard(const StagingJob& job, const std::vector<std::uint64_t>* expected) {
  KVF_ASSIGN_OR_RETURN(const CudaDriver* cuda, CudaDriver::get());
  CudaDriver::Scope scope(*cuda, static_cast<int>(job.pool->device));  // outlives the plan's buffers
  KVF_RETURN_IF_ERROR(scope.status());
  KVF_ASSIGN_OR_RETURN(Plan p, make_plan(job));
  const std::size_t groups = (p.blocks + p.per_group - 1) / p.per_group;
  std::optional<TransferRequest> reading[2];
  KVF_ASSIGN_OR_RETURN(TransferRequest first, post_group(job, p, 0, 0, TransferOp::kRead));
  reading[0].emplace(std::move(first));
  for (std::size_t g = 0; g < groups; ++g) {
    const int h = static_cast<int>(g % 2);
    if (g + 1 < groups) {  // the other half's copies to the GPU finished last round
      KVF_ASSIGN_OR_RETURN(TransferRequest next, post_group(job, p, g + 1, 1 - h, TransferOp::kRead));
      reading[1 - h].emplace(std::move(next));
    }
    KVF_RETURN_IF_ERROR(reading[h]->wait(job.timeout));
    if (expected)
      for (std::size_t b = g * p.per_group, k = 0; b < std::min(p.blocks, (g + 1) * p.per_group); ++b, ++k)
        if (staged_checksum(p, h, k) != (*expected)[b])
          return Corrupt("block " + std::to_string(b) + " of the request does not match its checksum");
    KVF_RETURN_IF_ERROR(copy_group(job, p, g, h, false));
  }
  return Status::Ok();
}

}  // namespace kvferry::detail
