// matmul and expert_matmul: out = a @ w^T over groups of rows, blocked for the cache, in fp32.
//
// Both ops are one routine: a list of groups (matmul: one; expert_matmul: one per segment with rows),
// each cut into MC x NC tiles of the output. A tile walks K in KC steps; each step converts the
// slice of `a` and of `w` it needs to fp32 once (from any float storage) into micro-panels, and a
// 4 x 8 fp32 micro-kernel, written so the compiler keeps its accumulators in vector registers,
// does the multiply-adds. Tiles of all groups go to the pool together, so a layer whose experts
// hold one row each parallelises as well as one big GEMM. expert_matmul's kernel choice (grouped
// or dense) cannot change the result here: both run this code.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../opcheck.h"
#include "dtype.h"
#include "kernels.h"

namespace eps::cpu {
namespace {

constexpr int64_t kMr = 4;    // micro-kernel rows
constexpr int64_t kNr = 8;    // micro-kernel columns (two SSE vectors)
constexpr int64_t kMc = 64;   // tile rows
constexpr int64_t kNc = 64;   // tile columns
constexpr int64_t kKc = 256;  // depth of one packed slice: a 64 x 256 fp32 panel is 64 KiB

// One product: out rows [outRow0, outRow0 + m) = a rows [aRow0, ...) @ w[wOffset...]^T, N columns.
struct GemmGroup {
  int64_t aRow0;
  int64_t m;
  int64_t wOffset;  // elements into w where this group's [N, K] matrix starts
};

struct GemmProblem {
  const TensorRef* a;  // [R, K]
  const TensorRef* w;  // rows of K, N per group
  const TensorRef* out;
  const TensorRef* bias;  // [N] or absent
  int64_t n, k;
  std::vector<GemmGroup> groups;
};

struct TileTask {
  int32_t group;
  int64_t m0, n0;
};

// Per-thread buffers, reused across tiles and calls.
struct Scratch {
  std::vector<float> aPanels, wPanels, acc, row;
  Scratch() : aPanels(kMc * kKc), wPanels(kNc * kKc), acc(kMc * kNc), row(kKc) {}
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// c[4][ldc] += a-panel (kLen x 4) times w-panel (kLen x 8). Fixed trip counts let the compiler unroll
// i and vectorise j, keeping the 32 accumulators in registers.
inline void microKernel(int64_t kLen, const float* __restrict aPanel, const float* __restrict wPanel,
                        float* __restrict c, int64_t ldc) {
  float acc[kMr][kNr] = {};
  for (int64_t kk = 0; kk < kLen; ++kk) {
    const float* av = aPanel + kk * kMr;
    const float* wv = wPanel + kk * kNr;
    for (int64_t i = 0; i < kMr; ++i) {
      const float ai = av[i];
      for (int64_t j = 0; j < kNr; ++j) acc[i][j] += ai * wv[j];
    }
  }
  for (int64_t i = 0; i < kMr; ++i)
    for (int64_t j = 0; j < kNr; ++j) c[i * ldc + j] += acc[i][j];
}

// Converts rows [row0, row0 + rows) x columns [k0, k0 + kLen) of a row-major [*, K] float tensor
// (starting `base` elements in) into panels of `width` rows: panel p holds, for each kk, the values
// of its `width` rows at k0 + kk, contiguous. Rows past `rows` up to a multiple of width are zero.
void packPanels(const TensorRef& t, int64_t base, int64_t ld, int64_t row0, int64_t rows, int64_t k0,
                int64_t kLen, int64_t width, float* panels, float* rowBuf) {
  const int64_t padded = (rows + width - 1) / width * width;
  for (int64_t r = 0; r < padded; ++r) {
    float* dst = panels + (r / width) * kLen * width + (r % width);
    if (r < rows) {
      loadFloats(t, base + (row0 + r) * ld + k0, kLen, rowBuf);
      for (int64_t kk = 0; kk < kLen; ++kk) dst[kk * width] = rowBuf[kk];
    } else {
      for (int64_t kk = 0; kk < kLen; ++kk) dst[kk * width] = 0.0f;
    }
  }
}

// One MC x NC tile of the output. K = 0 is fine: the accumulators stay zero and out gets the bias.
void runTile(const GemmProblem& p, const TileTask& task) {
  const GemmGroup& g = p.groups[task.group];
  const int64_t mLen = std::min(kMc, g.m - task.m0);
  const int64_t nLen = std::min(kNc, p.n - task.n0);
  const int64_t mPad = (mLen + kMr - 1) / kMr * kMr;
  const int64_t nPad = (nLen + kNr - 1) / kNr * kNr;
  Scratch& s = scratch();
  float* acc = s.acc.data();  // [mPad][kNc]
  std::fill(acc, acc + mPad * kNc, 0.0f);

  for (int64_t k0 = 0; k0 < p.k; k0 += kKc) {
    const int64_t kLen = std::min(kKc, p.k - k0);
    packPanels(*p.a, 0, p.k, g.aRow0 + task.m0, mLen, k0, kLen, kMr, s.aPanels.data(), s.row.data());
    packPanels(*p.w, g.wOffset, p.k, task.n0, nLen, k0, kLen, kNr, s.wPanels.data(), s.row.data());
    for (int64_t i = 0; i < mPad; i += kMr) {
      const float* aPanel = s.aPanels.data() + (i / kMr) * kLen * kMr;
      for (int64_t j = 0; j < nPad; j += kNr) {
        microKernel(kLen, aPanel, s.wPanels.data() + (j / kNr) * kLen * kNr, acc + i * kNc + j, kNc);
      }
    }
  }

  if (p.bias->present()) {
    float* biasRow = s.row.data();  // kKc >= kNc floats
    loadFloats(*p.bias, task.n0, nLen, biasRow);
    for (int64_t i = 0; i < mLen; ++i)
      for (int64_t j = 0; j < nLen; ++j) acc[i * kNc + j] += biasRow[j];
  }
  for (int64_t i = 0; i < mLen; ++i) {
    storeFloats(*p.out, (g.aRow0 + task.m0 + i) * p.n + task.n0, nLen, acc + i * kNc);
  }
}

void runGemm(const GemmProblem& p) {
  std::vector<TileTask> tasks;
  for (int32_t gi = 0; gi < int32_t(p.groups.size()); ++gi) {
    for (int64_t m0 = 0; m0 < p.groups[gi].m; m0 += kMc)
      for (int64_t n0 = 0; n0 < p.n; n0 += kNc) tasks.push_back({gi, m0, n0});
  }
  parallelTasks(int64_t(tasks.size()), [&](int64_t i) { runTile(p, tasks[i]); });
}

}  // namespace

// tensors: out[M,N], a[M,K], w[N,K], bias[N] (optional)
void matmulKernel(const OpArgs& args) {
  static const TensorRef kNoBias;
  const TensorRef& out = args.tensors[0];
  const TensorRef& a = args.tensors[1];
  const TensorRef& w = args.tensors[2];
  const TensorRef* bias = args.tensors.size() > 3 ? &args.tensors[3] : &kNoBias;
  GemmProblem p{&a, &w, &out, bias, w.dim(0), a.dim(1), {}};
  if (a.dim(0) > 0) p.groups.push_back({0, a.dim(0), 0});
  runGemm(p);
}

// tensors: out[R,N], a[R,K], w[E,N,K], segmentCounts[S] i32 (optional); params: kernel; ints: counts[S]
// (without segmentCounts), S a multiple of E. Segment s (counts[s] contiguous rows) uses expert s % E.
// params: kernel, swiglu. With swiglu the product goes to a scratch [R, N] of out's dtype (rounded as the
// unfused path rounds it) and the swiglu kernel writes out[R, N/2] from its rows that were computed.
void expertMatmulKernel(const OpArgs& args) {
  static const TensorRef kNoBias;
  const TensorRef& out = args.tensors[0];
  const TensorRef& a = args.tensors[1];
  const TensorRef& w = args.tensors[2];
  const int64_t n = w.dim(1), k = w.dim(2);
  const bool swiglu = args.params.size() > 1 && args.params[1] != 0.0;
  std::vector<uint8_t> scratch;
  TensorRef product = out;
  if (swiglu) {
    product = withShape(out, {a.dim(0), n});
    scratch.resize(size_t(product.numel()) * dtypeSize(out.dtype));
    product.data = scratch.data();
  }
  GemmProblem p{&a, &w, &product, &kNoBias, n, k, {}};
  const int64_t E = w.dim(0);
  // Counts in (this backend's) device memory are read and checked here, as the CUDA op checks the ones it reads.
  const bool onDevice = args.tensors.size() > 3 && args.tensors[3].present();
  const std::vector<int64_t> counts =
      onDevice ? checkedDeviceCounts(args.tensors[3].as<const int32_t>(), size_t(args.tensors[3].numel()), a.dim(0))
               : args.ints;
  int64_t row = 0;
  for (size_t s = 0; s < counts.size(); ++s) {
    const int64_t count = counts[s];
    if (count > 0) p.groups.push_back({row, count, (int64_t(s) % E) * n * k});
    row += count;
  }
  runGemm(p);
  if (swiglu && row > 0) runCpuKernel("swiglu", {withShape(out, {row, n / 2}), withShape(product, {row, n})});
}

// The ops this file implements (contracts: native/ops.md).
EPS_CPU_KERNEL("matmul", matmulKernel);
EPS_CPU_KERNEL("expert_matmul", expertMatmulKernel);

}  // namespace eps::cpu
