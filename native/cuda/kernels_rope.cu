// rope: GPT-NeoX rotate-half on the first rd = 2*len(invFreq) dims of every head, in place.
//
// The arithmetic follows the CPU kernel step for step: the angle pos * invFreq in fp32, cos and sin of
// it in double rounded to fp32, scaled in fp32, and the rotation in fp32 with explicit round-to-nearest
// products (no fused multiply-add), so both backends agree to the bit before the final rounding to storage.
//
// Layout of the work: a block per token. Its threads first compute the token's cos and sin once per
// frequency into shared memory, then rotate every (head, frequency) pair of the token, consecutive
// threads on consecutive frequencies (coalesced), each thread loading kBatch pairs before it stores any.
// The kernel before this one gave each (token, frequency) thread every head in turn, a load-store chain of
// nh steps: at Qwen3-30B-A3B's 32 heads and 16K tokens it took ~0.45 ms of a ~6 ms layer on an H100 (trace,
// BENCHMARKS.md session 6). EPS_ROPE_KERNEL=pairs still runs it (and =token the new one), for before/after measurements.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cuda_check.h"
#include "dtype.cuh"
#include "ops.h"

namespace eps::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBatch = 4;
constexpr int kMaxHalf = 1024;  // frequencies held in shared memory (rd <= 2048)

__device__ __forceinline__ void angleCosSin(int32_t pos, float invFreq, float scaling, float* cs, float* sn) {
  const float angle = __fmul_rn(float(pos), invFreq);
  double sd, cd;
  sincos(double(angle), &sd, &cd);
  *cs = __fmul_rn(float(cd), scaling);
  *sn = __fmul_rn(float(sd), scaling);
}

__global__ void __launch_bounds__(kThreads) ropeTokenKernel(FloatDst x, const int32_t* __restrict__ positions,
                                                            const float* __restrict__ invFreq, int64_t nh, int64_t hd,
                                                            int half, float scaling) {
  __shared__ float sCos[kMaxHalf], sSin[kMaxHalf];
  const int64_t t = blockIdx.x;
  const int32_t pos = positions[t];
  for (int i = threadIdx.x; i < half; i += kThreads) angleCosSin(pos, invFreq[i], scaling, &sCos[i], &sSin[i]);
  __syncthreads();
  const int64_t pairs = nh * half, tokenBase = t * nh * hd;
  for (int64_t p0 = threadIdx.x; p0 < pairs; p0 += int64_t(kThreads) * kBatch) {
    float x1[kBatch], x2[kBatch];
    int64_t base[kBatch];
    int fi[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int64_t p = p0 + int64_t(b) * kThreads;
      const int64_t h = p / half;
      fi[b] = int(p - h * half);
      base[b] = tokenBase + h * hd;
      if (p < pairs) x1[b] = x.load(base[b] + fi[b]), x2[b] = x.load(base[b] + fi[b] + half);
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      if (p0 + int64_t(b) * kThreads >= pairs) break;
      const float cs = sCos[fi[b]], sn = sSin[fi[b]];
      x.store(base[b] + fi[b], __fsub_rn(__fmul_rn(x1[b], cs), __fmul_rn(x2[b], sn)));
      x.store(base[b] + fi[b] + half, __fadd_rn(__fmul_rn(x2[b], cs), __fmul_rn(x1[b], sn)));
    }
  }
}

// The earlier kernel (EPS_ROPE_KERNEL=pairs): one thread per (token, frequency), every head in turn.
__global__ void ropePairsKernel(FloatDst x, const int32_t* __restrict__ positions, const float* __restrict__ invFreq,
                                int64_t T, int64_t nh, int64_t hd, int64_t half, float scaling) {
  const int64_t n = T * half;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / half, i = e - t * half;
    float cs, sn;
    angleCosSin(positions[t], invFreq[i], scaling, &cs, &sn);
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t base = (t * nh + h) * hd;
      const float x1 = x.load(base + i), x2 = x.load(base + i + half);
      x.store(base + i, __fsub_rn(__fmul_rn(x1, cs), __fmul_rn(x2, sn)));
      x.store(base + i + half, __fadd_rn(__fmul_rn(x2, cs), __fmul_rn(x1, sn)));
    }
  }
}

// The default kernel; EPS_ROPE_KERNEL=token or =pairs picks one, for before/after measurements.
constexpr bool kTokenByDefault = true;

bool tokenKernel() {
  const char* kernel = std::getenv("EPS_ROPE_KERNEL");
  if (kernel && std::strcmp(kernel, "pairs") == 0) return false;
  if (kernel && std::strcmp(kernel, "token") == 0) return true;
  return kTokenByDefault;
}

}  // namespace

// tensors: x[T,nh,hd] (in place), positions[T] i32, invFreq[rd/2] f32; params: attentionScaling
void ropeOp(OpContext& c, const OpArgs& args) {
  const TensorRef& x = args.tensors[0];
  const int64_t T = x.dim(0), nh = x.dim(1), hd = x.dim(2);
  const int64_t half = args.tensors[2].numel();
  if (T == 0 || nh == 0 || half == 0) return;
  const auto* positions = args.tensors[1].as<const int32_t>();
  const auto* invFreq = args.tensors[2].as<const float>();
  const float scaling = float(args.params[0]);
  if (half <= kMaxHalf && T <= INT32_MAX && tokenKernel()) {
    ropeTokenKernel<<<unsigned(T), kThreads, 0, c.cuda>>>(floatDst(x), positions, invFreq, nh, hd, int(half), scaling);
  } else {
    const int threads = 128;
    ropePairsKernel<<<gridFor(T * half, threads), threads, 0, c.cuda>>>(floatDst(x), positions, invFreq, T, nh, hd, half,
                                                                        scaling);
  }
  checkLaunch("rope");
}

// The ops this file implements (contracts: native/ops.md).
EPS_CUDA_OP("rope", ropeOp);

}  // namespace eps::cuda
