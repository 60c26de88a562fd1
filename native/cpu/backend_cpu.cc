// The CPU backend: each Stream is a worker thread draining an in-order queue, so ops enqueue and
// return at once and two streams really run at the same time (races show up in tests, as on a GPU).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "../backend.h"
#include "kernels.h"
#include "parallel.h"

namespace eps {
namespace {

// The heap's share of MemoryCounters: every tensor is its own allocation (no cache). Shared with the storages,
// which may outlive the backend.
struct HeapCounters {
  std::atomic<uint64_t> allocations{0};
  std::atomic<uint64_t> allocatedBytes{0};
  std::atomic<int64_t> liveBytes{0};
  std::atomic<int64_t> allocateNs{0};
};

struct CpuStorage : Storage {
  CpuStorage(size_t n, std::shared_ptr<HeapCounters> c) : counters(std::move(c)), rounded(((n + 63) / 64) * 64 + 64) {
    bytes = n;
    const auto t0 = std::chrono::steady_clock::now();
    // 64-byte aligned; at least one byte so that data is never null for an empty tensor.
    data = std::aligned_alloc(64, rounded);
    if (!data) throw OutOfMemory(n, 0);
    counters->allocateNs += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    counters->allocations++;
    counters->allocatedBytes += rounded;
    counters->liveBytes += int64_t(rounded);
  }
  ~CpuStorage() override {
    std::free(data);
    counters->liveBytes -= int64_t(rounded);
  }
  std::shared_ptr<HeapCounters> counters;
  const size_t rounded;  // what aligned_alloc was asked for
};

struct CpuEvent : Event, std::enable_shared_from_this<CpuEvent> {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t recorded = 0;   // generation of the latest record() call
  uint64_t completed = 0;  // generation the stream has passed
  std::chrono::steady_clock::time_point at{};
};

class CpuStream : public Stream {
 public:
  CpuStream() : worker_([this] { loop(); }) {}
  ~CpuStream() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  // Runs `task` on the worker after everything before it; a task that throws marks the stream failed
  // and later tasks are skipped (as a CUDA error is sticky), but host callbacks still run.
  void push(std::string what, std::function<void()> task, bool always = false) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back({std::move(what), std::move(task), always});
    }
    cv_.notify_one();
  }
  const std::string& error() const { return error_; }

 private:
  struct Item {
    std::string what;
    std::function<void()> task;
    bool always;
  };
  void loop() {
    for (;;) {
      Item item;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stop_ and drained
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      if (!error_.empty() && !item.always) continue;
      try {
        item.task();
      } catch (const std::exception& e) {
        if (error_.empty()) error_ = item.what + ": " + e.what();
      } catch (...) {
        if (error_.empty()) error_ = item.what + ": unknown error";
      }
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stop_ = false;
  std::string error_;  // touched only by the worker thread
  std::thread worker_;
};

class CpuBackend : public Backend {
 public:
  std::string kind() const override { return "cpu"; }
  std::string deviceName() const override {
    return "cpu (" + std::to_string(cpu::poolThreads()) + " threads)";
  }
  int deviceIndex() const override { return 0; }

  std::shared_ptr<Storage> alloc(size_t bytes) override { return std::make_shared<CpuStorage>(bytes, heap_); }
  size_t freeBytes() const override { return 0; }
  MemoryCounters memoryCounters() const override {
    MemoryCounters m;
    m.allocations = double(heap_->allocations.load());
    m.allocatedBytes = double(heap_->allocatedBytes.load());
    m.allocateMs = double(heap_->allocateNs.load()) / 1e6;
    m.reservedBytes = double(heap_->liveBytes.load());
    return m;
  }

  std::shared_ptr<Stream> createStream(bool /*highPriority*/) override { return std::make_shared<CpuStream>(); }
  std::shared_ptr<Event> createEvent() override { return std::make_shared<CpuEvent>(); }

  void record(Stream& s, Event& e) override {
    // The task holds the event alive: JS may dispose of it before the stream gets there.
    auto ev = static_cast<CpuEvent&>(e).shared_from_this();
    uint64_t gen;
    {
      std::lock_guard<std::mutex> lock(ev->mu);
      gen = ++ev->recorded;
    }
    static_cast<CpuStream&>(s).push("record", [ev, gen] {
      std::lock_guard<std::mutex> lock(ev->mu);
      if (gen > ev->completed) {
        ev->completed = gen;
        ev->at = std::chrono::steady_clock::now();
      }
      ev->cv.notify_all();
    }, true);
  }

  void wait(Stream& s, Event& e) override {
    auto ev = static_cast<CpuEvent&>(e).shared_from_this();
    uint64_t gen;
    {
      std::lock_guard<std::mutex> lock(ev->mu);
      gen = ev->recorded;  // CUDA semantics: wait for the latest record made before this call
    }
    if (gen == 0) return;
    static_cast<CpuStream&>(s).push("wait", [ev, gen] {
      std::unique_lock<std::mutex> lock(ev->mu);
      ev->cv.wait(lock, [&] { return ev->completed >= gen; });
    }, true);
  }

  double elapsedMs(Event& a, Event& b) override {
    auto& ea = static_cast<CpuEvent&>(a);
    auto& eb = static_cast<CpuEvent&>(b);
    std::lock_guard<std::mutex> la(ea.mu);
    if (ea.completed == 0 || ea.completed < ea.recorded) throw std::runtime_error("elapsed: start event has not completed");
    std::lock_guard<std::mutex> lb(eb.mu);
    if (eb.completed == 0 || eb.completed < eb.recorded) throw std::runtime_error("elapsed: end event has not completed");
    return std::chrono::duration<double, std::milli>(eb.at - ea.at).count();
  }

  void upload(Stream& s, std::shared_ptr<Storage> dst, size_t off, std::shared_ptr<std::vector<uint8_t>> src) override {
    if (off + src->size() > dst->bytes) throw std::invalid_argument("upload: data past the end of the tensor");
    static_cast<CpuStream&>(s).push("upload", [dst, off, src] {
      std::memcpy(static_cast<uint8_t*>(dst->data) + off, src->data(), src->size());
    });
  }

  void download(Stream& s, std::shared_ptr<Storage> src, size_t off, std::shared_ptr<std::vector<uint8_t>> dst,
                HostCallback done) override {
    if (off + dst->size() > src->bytes) throw std::invalid_argument("download: range past the end of the tensor");
    auto& stream = static_cast<CpuStream&>(s);
    stream.push("download", [src, off, dst] {
      std::memcpy(dst->data(), static_cast<uint8_t*>(src->data) + off, dst->size());
    });
    enqueueHost(s, std::move(done));
  }

  void enqueueHost(Stream& s, HostCallback fn) override {
    auto& stream = static_cast<CpuStream&>(s);
    stream.push("host", [&stream, fn] { fn(stream.error()); }, true);
  }

  void op(Stream& s, OpArgs&& args) override {
    const auto& table = cpu::cpuKernels();
    auto it = table.find(args.name);
    if (it == table.end()) throw std::invalid_argument("the cpu backend has no op '" + args.name + "'");
    cpu::CpuKernel kernel = it->second;
    auto shared = std::make_shared<OpArgs>(std::move(args));
    static_cast<CpuStream&>(s).push(shared->name, [kernel, shared] { kernel(*shared); });
  }

  std::vector<std::string> opNames() const override {
    std::vector<std::string> names;
    for (const auto& [name, _] : cpu::cpuKernels()) names.push_back(name);
    return names;
  }

 private:
  std::shared_ptr<HeapCounters> heap_ = std::make_shared<HeapCounters>();
};

}  // namespace

std::unique_ptr<Backend> makeCpuBackend() { return std::make_unique<CpuBackend>(); }

namespace cpu {
std::unordered_map<std::string, CpuKernel>& cpuKernels() {
  static std::unordered_map<std::string, CpuKernel> table;
  return table;
}
}  // namespace cpu

}  // namespace eps
