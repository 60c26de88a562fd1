// The one interface both backends implement. The addon binding (addon.cc) speaks only to this.
// Ops are named and take OpArgs, so a backend adds an op by registering a kernel for it; the
// contract of every op (tensor order and dtypes, typed params, ints) is the op table of opcheck.h,
// checked once, by checkOp, before any backend sees the call; ops.md beside this file is its prose.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace eps {

enum class DType : int { F32 = 0, BF16 = 1, F16 = 2, I32 = 3, I64 = 4 };

size_t dtypeSize(DType t);
const char* dtypeName(DType t);
DType parseDType(const std::string& name);  // throws std::invalid_argument
bool isFloat(DType t);

// How a device's memory has been got and kept since its backend was made (the CPU's: one per process; the
// ranks' Health, Prometheus and `eps-moe status` report them): `allocations` blocks got from the system (cudaMalloc; the CPU's heap) taking
// `allocateMs` of host time, `allocatedBytes` in all; `outOfMemoryFlushes` times the device was full and the
// cache was flushed (CUDA: a device-wide wait, then every fenced block reusable, and cudaFree of every idle block
// when that was not enough); `reservedBytes` held now
// (tensors and cache); `cachedBytes` of those idle or waiting for their fence.
struct MemoryCounters {
  double allocations = 0;
  double allocatedBytes = 0;
  double allocateMs = 0;
  double outOfMemoryFlushes = 0;
  double reservedBytes = 0;
  double cachedBytes = 0;
};

// A block of memory on one device; freed (returned to its allocator) when the last owner drops it.
struct Storage {
  virtual ~Storage() = default;
  void* data = nullptr;
  size_t bytes = 0;
};

// What a kernel sees of a tensor: contiguous, row-major.
struct TensorRef {
  void* data = nullptr;  // nullptr marks an absent optional tensor
  DType dtype = DType::F32;
  std::vector<int64_t> shape;

  bool present() const { return data != nullptr; }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  int rank() const { return static_cast<int>(shape.size()); }
  // dim(-1) is the last dimension.
  int64_t dim(int i) const { return shape.at(i < 0 ? shape.size() + i : i); }
  template <class T>
  T* as() const { return static_cast<T*>(data); }
};

// The same storage seen with another shape of as many elements or fewer (a leading rows view, heads as rows).
inline TensorRef withShape(TensorRef t, std::vector<int64_t> shape) {
  t.shape = std::move(shape);
  return t;
}

// One op call. `keepAlive` holds the storages until the op has run (the CPU backend runs it later,
// on the stream's thread).
struct OpArgs {
  std::string name;
  std::vector<TensorRef> tensors;
  std::vector<double> params;
  std::vector<int64_t> ints;  // host-side integers, e.g. per-expert row counts
  std::vector<std::shared_ptr<Storage>> keepAlive;
};

// An in-order queue of work on one device.
class Stream {
 public:
  virtual ~Stream() = default;
};

// A point in a stream's work, as CUDA events are: wait() waits for the latest record().
class Event {
 public:
  virtual ~Event() = default;
};

// Called on a backend thread once the stream reaches a point. `error` is empty when every op
// before that point ran; otherwise it names the first op that failed on this stream.
using HostCallback = std::function<void(const std::string& error)>;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string kind() const = 0;        // "cpu" | "cuda"
  virtual std::string deviceName() const = 0;  // e.g. "NVIDIA H200" or "cpu (2 threads)"
  virtual int deviceIndex() const = 0;

  // Throws eps::OutOfMemory when the device cannot give `bytes`.
  virtual std::shared_ptr<Storage> alloc(size_t bytes) = 0;
  virtual size_t freeBytes() const = 0;
  virtual MemoryCounters memoryCounters() const = 0;

  // highPriority: the device schedules this stream's blocks first as others retire (CUDA stream
  // priorities), so that communication is not starved by GEMMs filling every SM. The CPU ignores it.
  virtual std::shared_ptr<Stream> createStream(bool highPriority = false) = 0;
  virtual std::shared_ptr<Event> createEvent() = 0;
  virtual void record(Stream& s, Event& e) = 0;
  virtual void wait(Stream& s, Event& e) = 0;
  // Milliseconds between two recorded events, once both have completed (CUDA events on GPU).
  virtual double elapsedMs(Event& start, Event& end) = 0;

  // Copies from host memory that `src` owns into dst (at byteOffset) in stream order.
  virtual void upload(Stream& s, std::shared_ptr<Storage> dst, size_t byteOffset,
                      std::shared_ptr<std::vector<uint8_t>> src) = 0;
  // Copies bytes out in stream order into `dst` (which the caller keeps alive), then calls done.
  virtual void download(Stream& s, std::shared_ptr<Storage> src, size_t byteOffset,
                        std::shared_ptr<std::vector<uint8_t>> dst, HostCallback done) = 0;
  // Calls fn once all work enqueued before it has finished.
  virtual void enqueueHost(Stream& s, HostCallback fn) = 0;

  // Enqueues one op (already checked by checkOp). Throws std::invalid_argument for an op this
  // backend does not have.
  virtual void op(Stream& s, OpArgs&& args) = 0;
  virtual std::vector<std::string> opNames() const = 0;
  // The expert_matmul kernels (ops.md) this device runs as themselves; a kernel not listed runs as
  // another with the same result (grouped_sm90 as grouped). The cost model measures only these.
  virtual std::vector<std::string> expertKernels() const { return {"grouped", "dense"}; }
  // The attention kernels this device can run (ops.md): the CPU backend's one routine ("reference"); on
  // CUDA "sm80" (the flash and generic kernels) and, on compute capability 9.0 with the sm_90a build,
  // "sm90" (which EPS_ATTENTION_KERNEL chooses between). Lets a test tell that the Hopper path exists.
  virtual std::vector<std::string> attentionKernels() const { return {"reference"}; }
};

struct OutOfMemory : std::runtime_error {
  OutOfMemory(size_t asked, size_t free);
  size_t asked, free;
};

std::unique_ptr<Backend> makeCpuBackend();
#ifdef EPS_WITH_CUDA
int cudaDeviceCount();
size_t cudaTotalBytes(int deviceIndex);
std::unique_ptr<Backend> makeCudaBackend(int deviceIndex);
// Library versions the CUDA backend was built against and runs with: {"cuda", "cublas", "nccl", ...}.
std::vector<std::pair<std::string, std::string>> cudaVersions();
#endif

}  // namespace eps
