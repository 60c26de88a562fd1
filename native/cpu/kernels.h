// The CPU backend's kernel table: one function per op of native/ops.md.
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

// Op name -> kernel, for every op in ops.md.
const std::unordered_map<std::string, CpuKernel>& cpuKernels();

// The kernels, grouped by the file that defines them.
// kernels_gemm.cc
void matmulKernel(const OpArgs& args);
void expertMatmulKernel(const OpArgs& args);
// kernels_attention.cc
void attentionKernel(const OpArgs& args);
void ropeKernel(const OpArgs& args);
// kernels_moe.cc
void routerKernel(const OpArgs& args);
void moePermuteKernel(const OpArgs& args);
void moeCountKernel(const OpArgs& args);
void moeRankCountKernel(const OpArgs& args);
void moeUnpermuteKernel(const OpArgs& args);
void moeRankDispatchKernel(const OpArgs& args);
// kernels_elementwise.cc
void embeddingKernel(const OpArgs& args);
void rmsnormKernel(const OpArgs& args);
void swigluKernel(const OpArgs& args);
void addKernel(const OpArgs& args);
void sigmoidGateAddKernel(const OpArgs& args);
void copyKernel(const OpArgs& args);
void gatherRowsKernel(const OpArgs& args);
void fillRandomKernel(const OpArgs& args);

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
