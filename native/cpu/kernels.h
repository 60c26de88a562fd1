// The CPU backend's kernels: one function per op of native/ops.md, each registered by its file.
//
// The backend runs a kernel on the stream's worker thread, after checkOp has validated the call, so
// kernels trust shapes, dtypes and counts. What checkOp cannot see (values inside device tensors:
// row indices, token ids) a kernel checks where a bad value would read or write out of bounds, and
// throws std::out_of_range; the backend reports it as the stream's error.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <unordered_map>

#include "../backend.h"
#include "parallel.h"

namespace eps::cpu {

using CpuKernel = void (*)(const OpArgs&);

// Op name -> kernel, for every op in ops.md. Each kernel file registers the kernels it defines, one
// line each, at load time: EPS_CPU_KERNEL("rmsnorm", rmsnormKernel); no other list names them.
std::unordered_map<std::string, CpuKernel>& cpuKernels();

struct RegisterCpuKernel {
  RegisterCpuKernel(const char* op, CpuKernel kernel) { cpuKernels().emplace(op, kernel); }
};
#define EPS_CPU_KERNEL(op, kernel) static const ::eps::cpu::RegisterCpuKernel registered_##kernel(op, kernel)

// Runs another op's kernel from inside a kernel (an op defined as others in sequence: its CPU twin is them).
inline void runCpuKernel(const char* op, std::vector<TensorRef> tensors, std::vector<double> params = {}) {
  OpArgs args;
  args.name = op;
  args.tensors = std::move(tensors);
  args.params = std::move(params);
  cpuKernels().at(op)(args);
}

// Runs fn(i) for every i in [0, n) on the pool, handing tasks out one at a time as threads free up,
// so that tasks of very different cost (GEMM tiles of experts with many and few rows, attention rows
// of short and long sequences) still balance. Each thread runs one claiming loop.
template <class Fn>
void parallelTasks(int64_t n, Fn&& fn) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  parallelFor(std::min<int64_t>(n, poolThreads()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t worker = begin; worker < end; ++worker) {
      for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i);
    }
  });
}

}  // namespace eps::cpu
