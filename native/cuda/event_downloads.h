// Small device-to-host reads that never hold up their stream. The other way (backend_cuda.cc's download) ends in
// cudaLaunchHostFunc calls, and the stream waits at each until CUDA's callback thread has run it: the MoE layer's
// count read, once per layer, left the GPU idle ~320 us between the router and the permute (BENCHMARKS.md,
// session 10). Here the bytes go to a pinned slot by cudaMemcpyAsync, an event marks the copy's end, and a thread
// of ours polls the pending events, copies each finished slot out and calls its callback (with the stream's error,
// as a host callback would report it). EPS_EVENT_DOWNLOADS=1 routes downloads of up to kSlotBytes here.
#pragma once

#include <cuda_runtime.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../backend.h"

namespace eps::cuda {

class CudaStream;

class EventDownloads {
 public:
  static constexpr size_t kSlotBytes = size_t(64) << 10;
  static constexpr int kSlots = 16;

  explicit EventDownloads(int device);
  // Calls the callbacks still pending with "the device was closed before the stream reached this point".
  ~EventDownloads();
  EventDownloads(const EventDownloads&) = delete;
  EventDownloads& operator=(const EventDownloads&) = delete;

  // Enqueues the copy of dst->size() bytes from device memory `from` on `stream`; `done` is called on this
  // class's thread once the stream has passed it. False, with nothing enqueued and `done` untouched, when the
  // read is larger than a slot or every slot is busy (the caller then reads the other way).
  bool start(CudaStream& stream, const void* from, std::shared_ptr<std::vector<uint8_t>> dst, HostCallback& done);
  // Before `stream` is destroyed: its finished reads complete, the others get `why`.
  void forget(cudaStream_t stream, const std::string& why);

 private:
  struct Job {
    CudaStream* stream;
    cudaEvent_t event;
    int slot;
    std::shared_ptr<std::vector<uint8_t>> dst;
    HostCallback done;
  };
  // Under mu_: whether the job's copy has finished (and then its bytes copied out, its slot and event freed, and
  // `why` the stream's error); false while it runs. `why` holds the device's error if it failed.
  bool finishLocked(Job& job, std::string& why);
  void loop();

  const int device_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint8_t* pinned_ = nullptr;  // kSlots x kSlotBytes, allocated on first use
  std::vector<bool> busy_;
  std::vector<cudaEvent_t> spareEvents_;
  std::vector<Job> jobs_;
  std::thread thread_;
};

// Whether downloads go through EventDownloads: EPS_EVENT_DOWNLOADS=1 (read at each call; off otherwise).
bool eventDownloadsOn();

}  // namespace eps::cuda
