#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace eps::cpu {
namespace {

class Pool {
 public:
  explicit Pool(int n) {
    for (int i = 0; i < n; ++i) workers_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  void submit(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
  }
  // Runs one queued task on the calling thread, if any; lets a waiting caller help instead of idling.
  bool runOne() {
    std::function<void()> task;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (tasks_.empty()) return false;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
    return true;
  }

 private:
  void loop() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !tasks_.empty(); });
        if (stop_ && tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }
  std::vector<std::thread> workers_;
  std::deque<std::function<void()>> tasks_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
};

Pool& pool() {
  // Leaked on purpose: worker threads must not be joined during static destruction at exit.
  static Pool* p = new Pool(std::max(0, poolThreads() - 1));
  return *p;
}

}  // namespace

int poolThreads() {
  static int n = []() -> int {
    if (const char* env = std::getenv("EPS_CPU_THREADS")) {
      int v = std::atoi(env);
      if (v > 0) return v;
    }
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }();
  return n;
}

void parallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int64_t chunks = std::min<int64_t>((n + grain - 1) / grain, poolThreads());
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  int64_t step = (n + chunks - 1) / chunks;
  struct Shared {
    std::atomic<int64_t> left;
    std::mutex mu;
    std::condition_variable cv;
    std::exception_ptr error;
  } shared;
  shared.left = chunks;
  auto runChunk = [&](int64_t c) {
    int64_t b = c * step, e = std::min(n, b + step);
    try {
      if (b < e) fn(b, e);
    } catch (...) {
      std::lock_guard<std::mutex> lock(shared.mu);
      if (!shared.error) shared.error = std::current_exception();
    }
    // Decrement under the lock: the waiter takes the lock once after seeing zero, so it cannot
    // destroy `shared` (on its stack) while this thread is still notifying.
    std::lock_guard<std::mutex> lock(shared.mu);
    if (--shared.left == 0) shared.cv.notify_all();
  };
  for (int64_t c = 1; c < chunks; ++c) pool().submit([&, c] { runChunk(c); });
  runChunk(0);
  // Help with queued work (ours or another stream's) rather than sleep while chunks remain.
  while (shared.left.load() > 0) {
    if (!pool().runOne()) {
      std::unique_lock<std::mutex> lock(shared.mu);
      shared.cv.wait_for(lock, std::chrono::microseconds(200), [&] { return shared.left.load() == 0; });
    }
  }
  { std::lock_guard<std::mutex> lock(shared.mu); }
  if (shared.error) std::rethrow_exception(shared.error);
}

}  // namespace eps::cpu
