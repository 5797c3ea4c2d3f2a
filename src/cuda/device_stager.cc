// The CUDA device stager (core/device_stager.h): one copy lane per (GPU, method), and a
// completion thread that polls the lanes' events and runs the callbacks.
#include <cuda_runtime.h>
#include <sys/prctl.h>

#include <condition_variable>
#include <list>
#include <map>
#include <mutex>
#include <thread>

#include "core/device_stager.h"
#include "cuda/copy_lane.h"
#include "cuda/cuda_util.h"

namespace kvferry::detail {
namespace {

using Clock = std::chrono::steady_clock;

class CudaDeviceStager final : public DeviceStager {
 public:
  CudaDeviceStager() : thread_([this] { complete_loop(); }) {}
  // Never destroyed (see instance()): the completion thread lives as long as the process.

  Result<PinnedBuffer> allocate_pinned(std::size_t bytes) override {
    void* p = nullptr;
    KVF_RETURN_IF_ERROR(cuda::check(cudaHostAlloc(&p, bytes, cudaHostAllocPortable | cudaHostAllocMapped),
                                    "cudaHostAlloc(" + std::to_string(bytes) + " bytes)"));
    PinnedBuffer b;
    b.memory = std::shared_ptr<std::uint8_t>(static_cast<std::uint8_t*>(p), [](std::uint8_t* q) { cudaFreeHost(q); });
    b.size = bytes;
    return b;
  }

  Status check_vram(std::uint64_t address, std::uint64_t length, int device) override {
    return cuda::check_device_range(address, length, device).status();
  }

  Status copy_async(int device, StageMethod method, const std::vector<StageItem>& items,
                    std::function<void(Status)> done) override {
    KVF_ASSIGN_OR_RETURN(Pending p, submit(device, method, items));
    p.done = std::move(done);
    {
      std::lock_guard lock(mu_);
      pending_.push_back(std::move(p));
    }
    cv_.notify_one();
    return Status::Ok();
  }

  Status copy(int device, StageMethod method, const std::vector<StageItem>& items,
              std::chrono::milliseconds timeout) override {
    KVF_ASSIGN_OR_RETURN(Pending p, submit(device, method, items));
    const auto deadline = Clock::now() + timeout;
    for (int spins = 0;; ++spins) {
      cudaError_t e = cudaEventQuery(p.sub.event);
      if (e != cudaErrorNotReady) {
        p.lane->release(p.sub);
        return cuda::check(e, "staging copy on GPU " + std::to_string(device));
      }
      if (Clock::now() > deadline) break;
      if (spins > 200) std::this_thread::sleep_for(std::chrono::microseconds(10));
    }
    // Still running: the completion thread releases it once it ends.
    {
      std::lock_guard lock(mu_);
      pending_.push_back(std::move(p));
    }
    cv_.notify_one();
    return Timeout("staging copy on GPU " + std::to_string(device) + " did not finish within " +
                   std::to_string(timeout.count()) + " ms");
  }

 private:
  struct Pending {
    cuda::CopyLane* lane = nullptr;
    cuda::Submission sub;
    std::function<void(Status)> done;
  };

  Result<cuda::CopyLane*> lane(int device, StageMethod method) {
    std::lock_guard lock(lanes_mu_);
    auto& slot = lanes_[{device, method}];
    if (!slot) {
      auto created = cuda::CopyLane::create(
          device, method == StageMethod::kBatch ? cuda::CopyMethod::kBatch : cuda::CopyMethod::kKernel, 0);
      if (!created.ok()) {
        lanes_.erase({device, method});
        return created.status();
      }
      slot = std::move(created).value();
    }
    return slot.get();
  }

  Result<Pending> submit(int device, StageMethod method, const std::vector<StageItem>& items) {
    if (items.empty()) return InvalidArgument("staging copy: no items");
    KVF_ASSIGN_OR_RETURN(cuda::CopyLane * l, lane(device, method));
    std::vector<cuda::CopyPair> pairs;
    pairs.reserve(items.size());
    for (const StageItem& it : items) pairs.push_back(cuda::CopyPair{it.src, it.dst, it.length});
    Pending p;
    p.lane = l;
    KVF_RETURN_IF_ERROR(l->submit(pairs, &p.sub).with_context("staging copy on GPU " + std::to_string(device)));
    return p;
  }

  // Polls the events of pending copies (they may complete out of order across lanes);
  // sleeps on the condition variable while nothing is pending.
  void complete_loop() {
    ::prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);  // 10 us naps, not 60 (default slack)
    std::vector<std::pair<std::function<void(Status)>, Status>> ready;
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return !pending_.empty(); });
      for (auto it = pending_.begin(); it != pending_.end();) {
        cudaError_t e = cudaEventQuery(it->sub.event);
        if (e == cudaErrorNotReady) {
          ++it;
          continue;
        }
        it->lane->release(it->sub);
        if (it->done) ready.emplace_back(std::move(it->done), cuda::check(e, "staging copy on the GPU"));
        it = pending_.erase(it);
      }
      if (ready.empty()) {
        lock.unlock();
        std::this_thread::sleep_for(std::chrono::microseconds(10));
        lock.lock();
        continue;
      }
      lock.unlock();
      for (auto& [done, st] : ready) done(std::move(st));
      ready.clear();
      lock.lock();
    }
  }

  std::mutex lanes_mu_;
  std::map<std::pair<int, StageMethod>, std::unique_ptr<cuda::CopyLane>> lanes_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::list<Pending> pending_;
  std::thread thread_;
};

}  // namespace

Result<std::shared_ptr<DeviceStager>> DeviceStager::instance() {
  // Created once and never destroyed: its thread and lanes must outlive every user,
  // including static destructors that may still stage at exit.
  static const auto* made = [] {
    auto* r = new Result<std::shared_ptr<DeviceStager>>(Unavailable("uninitialised"));
    auto n = cuda::device_count();
    if (!n.ok()) *r = n.status().with_context("vram through host memory");
    else *r = std::shared_ptr<DeviceStager>(std::make_shared<CudaDeviceStager>());
    return r;
  }();
  return *made;
}

}  // namespace kvferry::detail
