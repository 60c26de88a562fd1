#include "allocator.h"

#include <algorithm>
#include <chrono>

#include "../backend.h"
#include "cuda_check.h"

namespace eps::cuda {

namespace {
constexpr size_t kMiB = size_t(1) << 20;
constexpr size_t kGiB = size_t(1) << 30;
}  // namespace

size_t CachingAllocator::roundSize(size_t bytes) {
  if (bytes <= 512) return 512;
  if (bytes <= kMiB) return (bytes + 511) & ~size_t(511);
  if (bytes >= kGiB) return (bytes + 2 * kMiB - 1) & ~(2 * kMiB - 1);
  size_t pow2 = kMiB;
  while (pow2 * 2 <= bytes) pow2 *= 2;
  const size_t step = pow2 / 8;
  return (bytes + step - 1) / step * step;
}

CachingAllocator::CachingAllocator(int device) : device_(device) {}

CachingAllocator::~CachingAllocator() {
  // Storages hold the allocator alive, so every block is back by now; the device may still be
  // running work that read them, hence the wait before cudaFree (which would wait anyway).
  cudaSetDevice(device_);
  cudaDeviceSynchronize();
  std::lock_guard<std::mutex> lock(mu_);
  {
    std::lock_guard<std::mutex> rl(releasedMu_);
    for (const Block& b : released_) idle_[b.bytes].push_back(b.ptr);
    released_.clear();
  }
  for (Fence& f : pending_) {
    for (const Block& b : f.blocks) idle_[b.bytes].push_back(b.ptr);
    for (cudaEvent_t e : f.events) cudaEventDestroy(e);
  }
  pending_.clear();
  for (auto& [size, ptrs] : idle_)
    for (void* p : ptrs) cudaFree(p);
  idle_.clear();
  for (cudaEvent_t e : spareEvents_) cudaEventDestroy(e);
}

void CachingAllocator::addStream(cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mu_);
  streams_.push_back(stream);
}

void CachingAllocator::removeStream(cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mu_);
  // Blocks released while this stream lived must be fenced on it before it goes.
  fenceReleasedLocked();
  streams_.erase(std::remove(streams_.begin(), streams_.end(), stream), streams_.end());
}

void CachingAllocator::release(void* ptr, size_t blockBytes) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(releasedMu_);
  released_.push_back({ptr, blockBytes});
  releasedBytes_ += blockBytes;
}

size_t CachingAllocator::cachedBytes() {
  std::lock_guard<std::mutex> lock(mu_);
  std::lock_guard<std::mutex> rl(releasedMu_);
  return idleBytes_ + pendingBytes_ + releasedBytes_;
}

MemoryCounters CachingAllocator::counters() {
  std::lock_guard<std::mutex> lock(mu_);
  std::lock_guard<std::mutex> rl(releasedMu_);
  MemoryCounters m;
  m.allocations = double(mallocs_);
  m.allocatedBytes = double(mallocBytes_);
  m.allocateMs = mallocMs_;
  m.outOfMemoryFlushes = double(oomFlushes_);
  m.reservedBytes = double(reservedBytes_);
  m.cachedBytes = double(idleBytes_ + pendingBytes_ + releasedBytes_);
  return m;
}

void* CachingAllocator::driverMallocLocked(size_t bytes, cudaError_t* status) {
  void* p = nullptr;
  const auto t0 = std::chrono::steady_clock::now();
  *status = cudaMalloc(&p, bytes);
  mallocMs_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (*status != cudaSuccess) return nullptr;
  mallocs_++;
  mallocBytes_ += bytes;
  reservedBytes_ += bytes;
  return p;
}

cudaEvent_t CachingAllocator::takeEventLocked() {
  if (!spareEvents_.empty()) {
    cudaEvent_t e = spareEvents_.back();
    spareEvents_.pop_back();
    return e;
  }
  cudaEvent_t e;
  checkCuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreateWithFlags(allocator fence)");
  return e;
}

void CachingAllocator::fenceReleasedLocked() {
  Fence fence;
  {
    std::lock_guard<std::mutex> rl(releasedMu_);
    if (released_.empty()) return;
    fence.blocks.swap(released_);
    releasedBytes_ = 0;
  }
  size_t bytes = 0;
  for (const Block& b : fence.blocks) bytes += b.bytes;
  try {
    for (cudaStream_t s : streams_) {
      cudaEvent_t e = takeEventLocked();
      fence.events.push_back(e);
      checkCuda(cudaEventRecord(e, s), "cudaEventRecord(allocator fence)");
    }
  } catch (...) {
    // A broken context: keep the blocks out of circulation rather than reuse them unfenced.
    pendingBytes_ += bytes;
    pending_.push_back(std::move(fence));
    throw;
  }
  pendingBytes_ += bytes;
  pending_.push_back(std::move(fence));
}

void CachingAllocator::reclaimLocked(bool deviceIsIdle) {
  while (!pending_.empty()) {
    Fence& f = pending_.front();
    if (!deviceIsIdle) {
      for (cudaEvent_t e : f.events) {
        cudaError_t st = cudaEventQuery(e);
        if (st == cudaErrorNotReady) {
          cudaGetLastError();  // not an error: clear it so that it is not reported by a later launch
          return;
        }
        checkCuda(st, "cudaEventQuery(allocator fence)");
      }
    }
    for (const Block& b : f.blocks) {
      idle_[b.bytes].push_back(b.ptr);
      idleBytes_ += b.bytes;
      pendingBytes_ -= b.bytes;
    }
    for (cudaEvent_t e : f.events) spareEvents_.push_back(e);
    pending_.pop_front();
  }
}

void* CachingAllocator::takeIdleLocked(size_t bytes) {
  auto it = idle_.find(bytes);
  if (it == idle_.end() || it->second.empty()) return nullptr;
  void* p = it->second.back();
  it->second.pop_back();
  idleBytes_ -= bytes;
  return p;
}

void CachingAllocator::freeIdleLocked() {
  for (auto& [size, ptrs] : idle_) {
    for (void* p : ptrs) {
      checkCuda(cudaFree(p), "cudaFree(cached block)");
      reservedBytes_ -= size;
    }
    ptrs.clear();
  }
  idle_.clear();
  idleBytes_ = 0;
}

void* CachingAllocator::allocate(size_t bytes, size_t* blockBytes) {
  const size_t size = roundSize(bytes);
  *blockBytes = size;
  std::lock_guard<std::mutex> lock(mu_);
  checkCuda(cudaSetDevice(device_), "cudaSetDevice(alloc)");
  fenceReleasedLocked();
  reclaimLocked(false);
  if (void* p = takeIdleLocked(size)) return p;

  cudaError_t st = cudaSuccess;
  void* p = driverMallocLocked(size, &st);
  if (st == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // an allocation failure is not sticky; clear it
    oomFlushes_++;
    // Let every queued kernel finish: then all fenced blocks are reusable, and the idle ones of
    // other size classes can go back to the driver.
    // (Only this thread enqueues work that reads allocator memory, so every block released so far
    // is idle once the device is.)
    checkCuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize(out of memory)");
    fenceReleasedLocked();
    reclaimLocked(true);
    if ((p = takeIdleLocked(size))) return p;
    freeIdleLocked();
    p = driverMallocLocked(size, &st);
    if (st == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t freeB = 0, totalB = 0;
      cudaMemGetInfo(&freeB, &totalB);
      throw OutOfMemory(bytes, freeB);
    }
  }
  checkCuda(st, "cudaMalloc");
  return p;
}

}  // namespace eps::cuda
