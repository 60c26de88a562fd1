// What one GPU's backend shares with its streams, events and storages: the device, its properties,
// the caching allocator, the pinned staging ring, the host-callback watch and the event downloads. Streams and storages
// hold it (or the allocator) by shared_ptr, so it outlives every object made from it.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "allocator.h"
#include "pinned_ring.h"

namespace eps::cuda {

class HostCallbackWatch;
class EventDownloads;

struct CudaContext {
  explicit CudaContext(int device);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  // Makes this device current on the calling thread (every entry point calls it: one process may
  // drive several GPUs from one thread).
  void activate() const;

  const int device;
  cudaDeviceProp props{};
  std::shared_ptr<CachingAllocator> allocator;
  PinnedRing ring;
  std::unique_ptr<HostCallbackWatch> watch;
  std::unique_ptr<EventDownloads> downloads;  // small reads that do not hold up their stream (event_downloads.h)
};

}  // namespace eps::cuda
