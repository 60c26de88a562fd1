// A process-wide pool of worker threads shared by every CPU stream. A stream's thread calls
// parallelFor and also works on the range itself, so two streams computing at once never deadlock.
#pragma once

#include <cstdint>
#include <functional>

namespace eps::cpu {

// Threads the pool uses (hardware concurrency, or EPS_CPU_THREADS when set).
int poolThreads();

// Splits [0, n) into chunks of at least `grain` items and runs fn(begin, end) on each, in parallel;
// returns when all chunks are done. Rethrows the first exception a chunk threw.
void parallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace eps::cpu
