// The CUDA backend: eps::Backend over one GPU. Storage from the caching allocator, streams and
// events as CUDA's, uploads and downloads through pinned staging in stream order, ops from the
// launchers registered in ops.h's table. Every CUDA call's status is checked; errors name the call.
#include <cublas_v2.h>
#include <nccl.h>

#include <algorithm>
#include <cstring>

#include "../backend.h"
#include "attention_sm90.h"
#include "cuda_check.h"
#include "event_downloads.h"
#include "grouped_gemm_sm90.h"
#include "ops.h"
#include "stream.h"

namespace eps {
namespace cuda {
namespace {

struct CudaStorage : Storage {
  CudaStorage(std::shared_ptr<CachingAllocator> a, size_t n) : allocator(std::move(a)) {
    data = allocator->allocate(n, &block);
    bytes = n;
  }
  // The allocator reuses the block only after every stream has passed a later fence.
  ~CudaStorage() override { allocator->release(data, block); }
  std::shared_ptr<CachingAllocator> allocator;
  size_t block = 0;
};

// A download chunk's last step, on CUDA's callback thread: pinned staging -> the caller's bytes.
struct CopyOut {
  const uint8_t* from;
  uint8_t* to;
  size_t n;
  std::shared_ptr<std::vector<uint8_t>> keep;
};

void CUDART_CB copyOutTrampoline(void* data) {
  std::unique_ptr<CopyOut> c(static_cast<CopyOut*>(data));
  std::memcpy(c->to, c->from, c->n);
}

CudaStream& cudaStreamOf(Stream& s) {
  auto* cs = dynamic_cast<CudaStream*>(&s);
  if (!cs) throw std::invalid_argument("the stream does not belong to a CUDA device");
  return *cs;
}

CudaEvent& cudaEventOf(Event& e) {
  auto* ce = dynamic_cast<CudaEvent*>(&e);
  if (!ce) throw std::invalid_argument("the event does not belong to a CUDA device");
  return *ce;
}

class CudaBackend : public Backend {
 public:
  explicit CudaBackend(int device) : ctx_(std::make_shared<CudaContext>(device)) {}

  std::string kind() const override { return "cuda"; }
  std::string deviceName() const override { return ctx_->props.name; }
  int deviceIndex() const override { return ctx_->device; }

  std::shared_ptr<Storage> alloc(size_t bytes) override {
    ctx_->activate();
    return std::make_shared<CudaStorage>(ctx_->allocator, bytes);
  }

  size_t freeBytes() const override {
    ctx_->activate();
    size_t freeB = 0, totalB = 0;
    checkCuda(cudaMemGetInfo(&freeB, &totalB), "cudaMemGetInfo");
    return freeB + ctx_->allocator->cachedBytes();
  }

  MemoryCounters memoryCounters() const override { return ctx_->allocator->counters(); }

  std::shared_ptr<Stream> createStream(bool highPriority) override { return std::make_shared<CudaStream>(ctx_, highPriority); }
  std::shared_ptr<Event> createEvent() override { return std::make_shared<CudaEvent>(ctx_); }

  void record(Stream& s, Event& e) override {
    ctx_->activate();
    CudaEvent& ev = cudaEventOf(e);
    checkCuda(cudaEventRecord(ev.handle(), cudaStreamOf(s).handle()), "cudaEventRecord");
    ev.recorded = true;
  }

  void wait(Stream& s, Event& e) override {
    ctx_->activate();
    CudaEvent& ev = cudaEventOf(e);
    if (!ev.recorded) return;  // CUDA semantics: waiting for a never-recorded event waits for nothing
    checkCuda(cudaStreamWaitEvent(cudaStreamOf(s).handle(), ev.handle(), 0), "cudaStreamWaitEvent");
  }

  double elapsedMs(Event& start, Event& end) override {
    ctx_->activate();
    CudaEvent& a = cudaEventOf(start);
    CudaEvent& b = cudaEventOf(end);
    if (!a.recorded) throw std::runtime_error("elapsed: start event was never recorded");
    if (!b.recorded) throw std::runtime_error("elapsed: end event was never recorded");
    float ms = 0.0f;
    cudaError_t st = cudaEventElapsedTime(&ms, a.handle(), b.handle());
    if (st == cudaErrorNotReady) {
      cudaGetLastError();
      throw std::runtime_error("elapsed: an event has not completed");
    }
    checkCuda(st, "cudaEventElapsedTime");
    return double(ms);
  }

  void upload(Stream& s, std::shared_ptr<Storage> dst, size_t off, std::shared_ptr<std::vector<uint8_t>> src) override {
    if (off + src->size() > dst->bytes) throw std::invalid_argument("upload: data past the end of the tensor");
    ctx_->activate();
    CudaStream& stream = cudaStreamOf(s);
    const uint8_t* from = src->data();
    uint8_t* to = static_cast<uint8_t*>(dst->data) + off;
    const size_t n = src->size(), chunk = ctx_->ring.maxChunk();
    for (size_t pos = 0; pos < n; pos += chunk) {
      const size_t len = std::min(chunk, n - pos);
      ctx_->ring.stage(len, stream.handle(), [&](uint8_t* pinned) {
        std::memcpy(pinned, from + pos, len);
        checkCuda(cudaMemcpyAsync(to + pos, pinned, len, cudaMemcpyHostToDevice, stream.handle()), "cudaMemcpyAsync(upload)");
      });
    }
  }

  void download(Stream& s, std::shared_ptr<Storage> src, size_t off, std::shared_ptr<std::vector<uint8_t>> dst,
                HostCallback done) override {
    if (off + dst->size() > src->bytes) throw std::invalid_argument("download: range past the end of the tensor");
    ctx_->activate();
    CudaStream& stream = cudaStreamOf(s);
    const uint8_t* from = static_cast<const uint8_t*>(src->data) + off;
    if (eventDownloadsOn() && ctx_->downloads->start(stream, from, dst, done)) return;
    const size_t n = dst->size(), chunk = ctx_->ring.maxChunk();
    for (size_t pos = 0; pos < n; pos += chunk) {
      const size_t len = std::min(chunk, n - pos);
      ctx_->ring.stage(len, stream.handle(), [&](uint8_t* pinned) {
        checkCuda(cudaMemcpyAsync(pinned, from + pos, len, cudaMemcpyDeviceToHost, stream.handle()), "cudaMemcpyAsync(download)");
        auto* copy = new CopyOut{pinned, dst->data() + pos, len, dst};
        cudaError_t st = cudaLaunchHostFunc(stream.handle(), copyOutTrampoline, copy);
        if (st != cudaSuccess) {
          delete copy;
          checkCuda(st, "cudaLaunchHostFunc(download)");
        }
      });
    }
    enqueueHost(s, std::move(done));
  }

  void enqueueHost(Stream& s, HostCallback fn) override {
    ctx_->activate();
    ctx_->watch->enqueue(cudaStreamOf(s), std::move(fn));
  }

  void op(Stream& s, OpArgs&& args) override {
    const auto& table = cudaKernels();
    auto it = table.find(args.name);
    if (it == table.end()) throw std::invalid_argument("the cuda backend has no op '" + args.name + "'");
    CudaStream& stream = cudaStreamOf(s);
    // As the CPU backend skips the ops after a failed one, this stream takes no more work.
    if (stream.failed()) throw std::runtime_error("the stream failed earlier: " + stream.error());
    ctx_->activate();
    OpContext c(stream);
    try {
      it->second(c, args);
    } catch (const CudaError& e) {
      stream.fail(args.name + ": " + e.what());
      throw;
    }
  }

  std::vector<std::string> opNames() const override {
    std::vector<std::string> names;
    for (const auto& [name, _] : cudaKernels()) names.push_back(name);
    std::sort(names.begin(), names.end());
    return names;
  }

  std::vector<std::string> expertKernels() const override {
    std::vector<std::string> kernels{"grouped", "dense"};
    ctx_->activate();
    if (groupedGemmSm90Supported(ctx_->device)) kernels.push_back("grouped_sm90");
    return kernels;
  }

  std::vector<std::string> attentionKernels() const override {
    std::vector<std::string> kernels{"sm80"};
    ctx_->activate();
    if (attentionSm90Supported(ctx_->device)) kernels.push_back("sm90");
    return kernels;
  }

 private:
  std::shared_ptr<CudaContext> ctx_;
};

}  // namespace

void* OpContext::scratch(size_t bytes) {
  auto storage = std::make_shared<CudaStorage>(ctx.allocator, bytes);
  scratch_.push_back(storage);
  return storage->data;
}

void* OpContext::uploadTable(const void* host, size_t bytes) {
  auto* dev = static_cast<uint8_t*>(scratch(bytes));
  const auto* from = static_cast<const uint8_t*>(host);
  const size_t chunk = ctx.ring.maxChunk();
  for (size_t pos = 0; pos < bytes; pos += chunk) {
    const size_t len = std::min(chunk, bytes - pos);
    ctx.ring.stage(len, cuda, [&](uint8_t* pinned) {
      std::memcpy(pinned, from + pos, len);
      checkCuda(cudaMemcpyAsync(dev + pos, pinned, len, cudaMemcpyHostToDevice, cuda), "cudaMemcpyAsync(table)");
    });
  }
  return dev;
}

std::unordered_map<std::string, CudaKernel>& cudaKernels() {
  static std::unordered_map<std::string, CudaKernel> table;
  return table;
}

}  // namespace cuda

int cudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: the addon reports no CUDA devices
    return 0;
  }
  return n;
}

size_t cudaTotalBytes(int deviceIndex) {
  cudaDeviceProp props{};
  cuda::checkCuda(cudaGetDeviceProperties(&props, deviceIndex), "cudaGetDeviceProperties");
  return props.totalGlobalMem;
}

std::unique_ptr<Backend> makeCudaBackend(int deviceIndex) { return std::make_unique<cuda::CudaBackend>(deviceIndex); }

namespace {
std::string dotted(int v, int div) {
  // CUDA encodes 13.0 as 13000 (major * 1000 + minor * 10); NCCL 2.28.3 as 22803.
  if (div == 1000) return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
  return std::to_string(v / 10000) + "." + std::to_string((v % 10000) / 100) + "." + std::to_string(v % 100);
}
}  // namespace

std::vector<std::pair<std::string, std::string>> cudaVersions() {
  std::vector<std::pair<std::string, std::string>> v;
  int runtime = 0, driver = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess) v.emplace_back("cuda", dotted(runtime, 1000));
  if (cudaDriverGetVersion(&driver) == cudaSuccess) v.emplace_back("cudaDriver", dotted(driver, 1000));
  int major = 0, minor = 0, patch = 0;
  if (cublasGetProperty(MAJOR_VERSION, &major) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(MINOR_VERSION, &minor) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(PATCH_LEVEL, &patch) == CUBLAS_STATUS_SUCCESS)
    v.emplace_back("cublas", std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch));
  int nccl = 0;
  if (ncclGetVersion(&nccl) == ncclSuccess) v.emplace_back("nccl", dotted(nccl, 10000));
  cudaGetLastError();
  return v;
}

}  // namespace eps
