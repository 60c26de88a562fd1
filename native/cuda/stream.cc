#include "stream.h"

#include <chrono>
#include <cstring>

#include "cuda_check.h"
#include "event_downloads.h"

namespace eps::cuda {

// ---------------------------------------------------------------- context

CudaContext::CudaContext(int device_)
    : device(device_),
      allocator(std::make_shared<CachingAllocator>(device_)),
      ring(device_, size_t(64) << 20),
      watch(std::make_unique<HostCallbackWatch>(device_)),
      downloads(std::make_unique<EventDownloads>(device_)) {
  checkCuda(cudaSetDevice(device), "cudaSetDevice");
  checkCuda(cudaGetDeviceProperties(&props, device), "cudaGetDeviceProperties");
}

CudaContext::~CudaContext() = default;

void CudaContext::activate() const { checkCuda(cudaSetDevice(device), "cudaSetDevice"); }

// ---------------------------------------------------------------- stream

namespace {

std::string describeIndexError(const volatile DeviceErrorSlot& slot) {
  const auto index = std::to_string(slot.index), value = std::to_string(slot.value), limit = std::to_string(slot.limit);
  switch (static_cast<IndexCheck>(slot.check)) {
    case IndexCheck::EmbeddingIds:
      return "embedding: ids[" + index + "] = " + value + " is outside [0, " + limit + ")";
    case IndexCheck::GatherIdx:
      return "gather_rows: idx[" + index + "] = " + value + " is outside [0, " + limit + ")";
    case IndexCheck::UnpermuteRow:
      return "moe_unpermute: rowMap[" + index + "] = " + value + " is outside y's " + limit + " rows";
    default:
      return "a kernel reported error " + std::to_string(slot.check);
  }
}

}  // namespace

CudaStream::CudaStream(std::shared_ptr<CudaContext> context, bool highPriority) : context_(std::move(context)) {
  context_->activate();
  int least = 0, greatest = 0;  // numerically, greatest < least: lower numbers are higher priorities
  checkCuda(cudaDeviceGetStreamPriorityRange(&least, &greatest), "cudaDeviceGetStreamPriorityRange");
  checkCuda(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, highPriority ? greatest : least),
            "cudaStreamCreateWithPriority");
  cudaError_t st = cudaHostAlloc(reinterpret_cast<void**>(&hostSlot_), sizeof(DeviceErrorSlot), cudaHostAllocMapped);
  if (st == cudaSuccess) {
    std::memset(hostSlot_, 0, sizeof(DeviceErrorSlot));
    st = cudaHostGetDevicePointer(reinterpret_cast<void**>(&deviceSlot_), hostSlot_, 0);
  }
  if (st != cudaSuccess) {
    if (hostSlot_) cudaFreeHost(hostSlot_);
    cudaStreamDestroy(stream_);
    checkCuda(st, "cudaHostAlloc(stream error slot)");
  }
  context_->allocator->addStream(stream_);
}

CudaStream::~CudaStream() {
  cudaSetDevice(context_->device);
  cudaError_t st = cudaStreamSynchronize(stream_);
  const std::string why = st == cudaSuccess ? "the stream was destroyed" : "the stream failed: " + cudaErrorText(st);
  context_->watch->forget(stream_, why);
  context_->downloads->forget(stream_, why);
  blas.reset();
  try {
    context_->allocator->removeStream(stream_);
  } catch (...) {
    // A broken context: nothing more can be fenced; the blocks stay out of circulation.
  }
  cudaStreamDestroy(stream_);
  cudaFreeHost(hostSlot_);
}

std::string CudaStream::error() const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_.empty()) return failure_;
  }
  const volatile DeviceErrorSlot* slot = hostSlot_;
  if (slot->check != 0) return describeIndexError(*slot);
  return {};
}

void CudaStream::fail(const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  if (failure_.empty()) failure_ = what;
}

bool CudaStream::failed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !failure_.empty();
}

// ---------------------------------------------------------------- event

CudaEvent::CudaEvent(std::shared_ptr<CudaContext> context) : context_(std::move(context)) {
  context_->activate();
  checkCuda(cudaEventCreate(&event_), "cudaEventCreate");
}

CudaEvent::~CudaEvent() {
  // Safe while a stream still has to reach it: CUDA frees the event once it completes.
  cudaSetDevice(context_->device);
  cudaEventDestroy(event_);
}

// ---------------------------------------------------------------- host callbacks

HostCallbackWatch::HostCallbackWatch(int device) : device_(device) {}

HostCallbackWatch::~HostCallbackWatch() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (auto& call : pending_)
    if (!call->fired.exchange(true)) call->fn("the device was closed before the stream reached this point");
}

void CUDART_CB HostCallbackWatch::trampoline(void* data) {
  std::unique_ptr<std::shared_ptr<Call>> holder(static_cast<std::shared_ptr<Call>*>(data));
  Call& call = **holder;
  if (!call.fired.exchange(true)) call.fn(call.stream->error());
}

void HostCallbackWatch::enqueue(CudaStream& stream, HostCallback fn) {
  auto call = std::make_shared<Call>();
  call->fn = std::move(fn);
  call->stream = &stream;
  call->handle = stream.handle();
  auto* holder = new std::shared_ptr<Call>(call);
  cudaError_t st = cudaLaunchHostFunc(stream.handle(), &HostCallbackWatch::trampoline, holder);
  if (st != cudaSuccess) {
    delete holder;
    cudaGetLastError();
    const std::string why = "cudaLaunchHostFunc: " + cudaErrorText(st);
    stream.fail(why);
    // Called on a thread of our own, as a callback from the stream would be.
    std::thread([call, why] {
      if (!call->fired.exchange(true)) call->fn(why);
    }).detach();
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(call);
    if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
  }
  cv_.notify_all();
}

void HostCallbackWatch::forget(cudaStream_t stream, const std::string& why) {
  std::vector<std::shared_ptr<Call>> orphans;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = pending_.begin(); it != pending_.end();) {
      if ((*it)->handle == stream) {
        orphans.push_back(*it);
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& call : orphans)
    if (!call->fired.exchange(true)) call->fn(why);
}

void HostCallbackWatch::loop() {
  cudaSetDevice(device_);
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (pending_.empty()) {
      cv_.wait(lock, [this] { return stop_ || !pending_.empty(); });
      continue;
    }
    cv_.wait_for(lock, std::chrono::milliseconds(50), [this] { return stop_; });
    if (stop_) break;
    std::vector<std::pair<std::shared_ptr<Call>, std::string>> failed;
    for (auto it = pending_.begin(); it != pending_.end();) {
      if ((*it)->fired.load()) {
        it = pending_.erase(it);
        continue;
      }
      // Queried under the lock: forget() (before a stream is destroyed) cannot interleave.
      cudaError_t st = cudaStreamQuery((*it)->handle);
      if (st != cudaSuccess && st != cudaErrorNotReady) {
        failed.emplace_back(*it, "the device failed before the stream reached this point: " + cudaErrorText(st));
        it = pending_.erase(it);
        continue;
      }
      ++it;
    }
    lock.unlock();
    for (auto& [call, why] : failed)
      if (!call->fired.exchange(true)) call->fn(why);
    lock.lock();
  }
}

}  // namespace eps::cuda
