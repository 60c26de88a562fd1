#include "event_downloads.h"

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "cuda_check.h"
#include "stream.h"

namespace eps::cuda {

bool eventDownloadsOn() {
  const char* env = std::getenv("EPS_EVENT_DOWNLOADS");
  return env && std::strcmp(env, "1") == 0;
}

EventDownloads::EventDownloads(int device) : device_(device), busy_(kSlots, false) {}

EventDownloads::~EventDownloads() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  cudaSetDevice(device_);
  for (Job& job : jobs_) {
    cudaEventDestroy(job.event);
    job.done("the device was closed before the stream reached this point");
  }
  for (cudaEvent_t e : spareEvents_) cudaEventDestroy(e);
  if (pinned_) cudaFreeHost(pinned_);
}

bool EventDownloads::start(CudaStream& stream, const void* from, std::shared_ptr<std::vector<uint8_t>> dst,
                           HostCallback& done) {
  const size_t n = dst->size();
  if (n > kSlotBytes) return false;
  std::unique_lock<std::mutex> lock(mu_);
  int slot = 0;
  while (slot < kSlots && busy_[size_t(slot)]) ++slot;
  if (slot == kSlots) return false;
  if (!pinned_) checkCuda(cudaHostAlloc(reinterpret_cast<void**>(&pinned_), kSlots * kSlotBytes, cudaHostAllocDefault), "cudaHostAlloc(event downloads)");
  cudaEvent_t event;
  if (spareEvents_.empty()) {
    checkCuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate(event downloads)");
  } else {
    event = spareEvents_.back();
    spareEvents_.pop_back();
  }
  if (n > 0) {
    const cudaError_t st = cudaMemcpyAsync(pinned_ + size_t(slot) * kSlotBytes, from, n, cudaMemcpyDeviceToHost, stream.handle());
    if (st != cudaSuccess) spareEvents_.push_back(event);
    checkCuda(st, "cudaMemcpyAsync(event download)");
  }
  const cudaError_t st = cudaEventRecord(event, stream.handle());
  if (st != cudaSuccess) spareEvents_.push_back(event);
  checkCuda(st, "cudaEventRecord(event download)");
  busy_[size_t(slot)] = true;
  jobs_.push_back(Job{&stream, event, slot, std::move(dst), std::move(done)});
  if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
  lock.unlock();
  cv_.notify_all();
  return true;
}

bool EventDownloads::finishLocked(Job& job, std::string& why) {
  const cudaError_t st = cudaEventQuery(job.event);
  if (st == cudaErrorNotReady) {
    cudaGetLastError();  // not an error: clear it so that it is not reported by a later call on this thread
    return false;
  }
  why = st == cudaSuccess ? job.stream->error() : "the device failed before the stream reached this point: " + cudaErrorText(st);
  if (why.empty() && !job.dst->empty()) std::memcpy(job.dst->data(), pinned_ + size_t(job.slot) * kSlotBytes, job.dst->size());
  busy_[size_t(job.slot)] = false;
  spareEvents_.push_back(job.event);
  return true;
}

void EventDownloads::forget(cudaStream_t stream, const std::string& why) {
  std::vector<std::pair<HostCallback, std::string>> calls;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      if (it->stream->handle() != stream) {
        ++it;
        continue;
      }
      std::string error;
      if (!finishLocked(*it, error)) {
        // Still running (the stream's destructor synchronised, so only a failed device gets here): its slot stays
        // busy, as its copy may yet land there.
        error = why;
      }
      calls.emplace_back(std::move(it->done), error);
      it = jobs_.erase(it);
    }
  }
  for (auto& [fn, error] : calls) fn(error);
}

void EventDownloads::loop() {
  cudaSetDevice(device_);
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (jobs_.empty()) {
      cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
      continue;
    }
    std::vector<std::pair<HostCallback, std::string>> calls;
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      std::string why;
      if (!finishLocked(*it, why)) {
        ++it;
        continue;
      }
      calls.emplace_back(std::move(it->done), why);
      it = jobs_.erase(it);
    }
    lock.unlock();
    for (auto& [fn, why] : calls) fn(why);
    // Polled every few microseconds while reads are pending (a read is waited on for at most a layer's time).
    if (calls.empty()) std::this_thread::sleep_for(std::chrono::microseconds(5));
    lock.lock();
  }
}

}  // namespace eps::cuda
