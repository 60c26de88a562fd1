// Pinned host staging for upload, download and small host-to-device tables (grouped-GEMM pointer
// arrays, attention tile lists), so that every copy is a true async copy in stream order.
//
// One ring of page-locked memory per device, carved front to back into regions. A region stays
// busy until an event recorded on the copying stream (after the copy, and after the host callback
// that empties a download) has completed; the ring blocks the caller only when it is full, waiting
// for its oldest region. Large transfers go through in chunks of at most maxChunk() bytes.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

namespace eps::cuda {

class PinnedRing {
 public:
  PinnedRing(int device, size_t capacity);
  ~PinnedRing();
  PinnedRing(const PinnedRing&) = delete;
  PinnedRing& operator=(const PinnedRing&) = delete;

  size_t maxChunk() const { return capacity_ / 4; }

  // Reserves n (1..maxChunk()) bytes, calls fill(ptr) to write them and enqueue the copies that use
  // them on `stream`, then marks the region busy until the stream passes that point.
  template <class Fn>
  void stage(size_t n, cudaStream_t stream, Fn&& fill) {
    std::lock_guard<std::mutex> lock(mu_);
    const size_t offset = reserveLocked(n);
    fill(base_ + offset);
    commitLocked(offset, n, stream);
  }

 private:
  struct Region {
    size_t begin, end;
    cudaEvent_t done;
  };
  size_t reserveLocked(size_t n);
  void commitLocked(size_t offset, size_t n, cudaStream_t stream);
  void reclaimLocked();

  const int device_;
  const size_t capacity_;
  std::mutex mu_;
  uint8_t* base_ = nullptr;  // allocated on first use
  size_t head_ = 0;          // where the next region starts (when it fits there)
  std::deque<Region> busy_;  // oldest first
  std::vector<cudaEvent_t> spareEvents_;
};

}  // namespace eps::cuda
