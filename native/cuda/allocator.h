// Device memory for one GPU: a caching allocator, so that the forward does no cudaMalloc/cudaFree
// per op.
//
// Blocks come from cudaMalloc in size classes (eight per power of two, so a class wastes at most an
// eighth; 512-byte steps below 1 MiB; 2 MiB steps from 1 GiB up, where an eighth would be too much)
// and go back to a per-class cache when freed. Memory from cudaMalloc is usable by every stream at
// once, so allocation needs no stream. Freeing is where streams matter: a tensor may be disposed of
// while kernels that read it are still queued on any stream. A released block therefore waits
// until a fence (one event recorded on every live stream of the device, after the release) has
// completed; only then is it reused. Streams synchronise before they are destroyed, so work on a
// dead stream never outlives its fence.
//
// release() makes no CUDA call and takes its own small lock, so it is safe anywhere: on a CUDA
// host-callback thread, or while another thread waits in cudaDeviceSynchronize holding the main
// lock (the out-of-memory path).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "../backend.h"

namespace eps::cuda {

class CachingAllocator {
 public:
  explicit CachingAllocator(int device);
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // A block of at least `bytes` (never null, 256-byte aligned); `*blockBytes` gets the size to give
  // back to release(). When the device is full: waits for the device, reuses or returns every
  // cached block, tries again, and then throws eps::OutOfMemory(bytes, free bytes).
  void* allocate(size_t bytes, size_t* blockBytes);
  void release(void* ptr, size_t blockBytes);

  // Streams whose work a fence must cover.
  void addStream(cudaStream_t stream);
  void removeStream(cudaStream_t stream);

  // Bytes held in the cache (idle, or waiting for their fence): free for this process's tensors.
  size_t cachedBytes();
  // What cudaMalloc gave and what the cache holds (backend.h MemoryCounters).
  MemoryCounters counters();

  // The size class a request of `bytes` gets (public for tests and for logs).
  static size_t roundSize(size_t bytes);

 private:
  struct Block {
    void* ptr;
    size_t bytes;
  };
  struct Fence {
    std::vector<Block> blocks;
    std::vector<cudaEvent_t> events;
  };

  void fenceReleasedLocked();
  void reclaimLocked(bool deviceIsIdle);
  void* takeIdleLocked(size_t bytes);
  void freeIdleLocked();
  void* driverMallocLocked(size_t bytes, cudaError_t* status);
  cudaEvent_t takeEventLocked();

  const int device_;
  std::mutex mu_;  // everything below but released_
  std::vector<cudaStream_t> streams_;
  std::unordered_map<size_t, std::vector<void*>> idle_;  // size class -> blocks ready to reuse
  size_t idleBytes_ = 0;
  std::deque<Fence> pending_;  // oldest first
  size_t pendingBytes_ = 0;
  std::vector<cudaEvent_t> spareEvents_;
  // Counters (MemoryCounters): blocks from cudaMalloc and the host time it took, bytes held from the driver,
  // out-of-memory flushes.
  uint64_t mallocs_ = 0;
  uint64_t mallocBytes_ = 0;
  double mallocMs_ = 0;
  size_t reservedBytes_ = 0;
  uint64_t oomFlushes_ = 0;

  std::mutex releasedMu_;
  std::vector<Block> released_;  // not yet fenced
  size_t releasedBytes_ = 0;
};

}  // namespace eps::cuda
