// Streams, events and host callbacks of the CUDA backend.
//
// A CudaStream is a non-blocking cudaStream_t plus what ops need beside it: a per-stream cuBLAS
// handle (owned by gemm.cc, opaque here), the stream's first error, and a slot of mapped host memory
// where kernels report bad indices (device_error.h). Host callbacks run through cudaLaunchHostFunc;
// since a kernel fault can stop a stream before it reaches them, a watch thread polls the streams
// that have callbacks pending and, when the device reports an error, calls them with it, so that no
// promise waits forever.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../backend.h"
#include "context.h"
#include "device_error.h"

namespace eps::cuda {

class CudaStream : public Stream {
 public:
  CudaStream(std::shared_ptr<CudaContext> context, bool highPriority);
  // Waits for the stream's work first: allocator fences cover live streams only, and the
  // backend's contract keeps a stream's queued work running after JS drops it.
  ~CudaStream() override;

  cudaStream_t handle() const { return stream_; }
  CudaContext& context() const { return *context_; }
  DeviceErrorSlot* errorSlot() const { return deviceSlot_; }

  // The stream's first error: a failed launch (fail()), or an index error a kernel reported; empty
  // when none. Safe on any thread, CUDA host callbacks included (reads host memory only).
  std::string error() const;
  void fail(const std::string& what);
  bool failed() const;

  // Per-stream cuBLAS state, created and destroyed by gemm.cc.
  std::shared_ptr<void> blas;

 private:
  std::shared_ptr<CudaContext> context_;
  cudaStream_t stream_ = nullptr;
  DeviceErrorSlot* hostSlot_ = nullptr;
  DeviceErrorSlot* deviceSlot_ = nullptr;
  mutable std::mutex mu_;
  std::string failure_;
};

class CudaEvent : public Event {
 public:
  explicit CudaEvent(std::shared_ptr<CudaContext> context);
  ~CudaEvent() override;
  cudaEvent_t handle() const { return event_; }
  bool recorded = false;

 private:
  std::shared_ptr<CudaContext> context_;
  cudaEvent_t event_ = nullptr;
};

// Calls each host callback exactly once: from the stream when it gets there, or from the watch
// thread if the device fails first.
class HostCallbackWatch {
 public:
  explicit HostCallbackWatch(int device);
  ~HostCallbackWatch();

  void enqueue(CudaStream& stream, HostCallback fn);
  // The stream is going away (after its synchronisation): callbacks still pending on it get `why`.
  void forget(cudaStream_t stream, const std::string& why);

 private:
  struct Call {
    HostCallback fn;
    std::atomic<bool> fired{false};
    CudaStream* stream;
    cudaStream_t handle;
  };
  static void CUDART_CB trampoline(void* data);
  void loop();

  const int device_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Call>> pending_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace eps::cuda
