#include "pinned_ring.h"

#include <stdexcept>
#include <string>

#include "cuda_check.h"

namespace eps::cuda {

PinnedRing::PinnedRing(int device, size_t capacity) : device_(device), capacity_(capacity) {}

PinnedRing::~PinnedRing() {
  for (Region& r : busy_) {
    cudaEventSynchronize(r.done);
    cudaEventDestroy(r.done);
  }
  for (cudaEvent_t e : spareEvents_) cudaEventDestroy(e);
  if (base_) cudaFreeHost(base_);
}

void PinnedRing::reclaimLocked() {
  while (!busy_.empty()) {
    cudaError_t st = cudaEventQuery(busy_.front().done);
    if (st == cudaErrorNotReady) {
      cudaGetLastError();
      return;
    }
    checkCuda(st, "cudaEventQuery(staging)");
    spareEvents_.push_back(busy_.front().done);
    busy_.pop_front();
  }
}

size_t PinnedRing::reserveLocked(size_t n) {
  if (n == 0 || n > maxChunk())
    throw std::logic_error("staging: a region of " + std::to_string(n) + " bytes (1.." + std::to_string(maxChunk()) + ")");
  if (!base_) {
    checkCuda(cudaSetDevice(device_), "cudaSetDevice(staging)");
    checkCuda(cudaHostAlloc(reinterpret_cast<void**>(&base_), capacity_, cudaHostAllocPortable), "cudaHostAlloc(staging)");
  }
  for (;;) {
    reclaimLocked();
    if (busy_.empty()) {
      head_ = 0;
      return 0;
    }
    const size_t tail = busy_.front().begin;
    if (head_ > tail) {
      // Busy: [tail, head). Free: [head, capacity) and [0, tail).
      if (capacity_ - head_ >= n) return head_;
      if (n < tail) return 0;
    } else if (tail - head_ > n) {
      // Wrapped. Busy: [tail, end of the last region before the wrap) and [0, head).
      return head_;
    }
    // Full: wait for the oldest region.
    checkCuda(cudaEventSynchronize(busy_.front().done), "cudaEventSynchronize(staging)");
  }
}

void PinnedRing::commitLocked(size_t offset, size_t n, cudaStream_t stream) {
  cudaEvent_t e;
  if (!spareEvents_.empty()) {
    e = spareEvents_.back();
    spareEvents_.pop_back();
  } else {
    checkCuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreateWithFlags(staging)");
  }
  cudaError_t st = cudaEventRecord(e, stream);
  if (st != cudaSuccess) {
    spareEvents_.push_back(e);
    checkCuda(st, "cudaEventRecord(staging)");
  }
  busy_.push_back({offset, offset + n, e});
  head_ = offset + n;
}

}  // namespace eps::cuda
