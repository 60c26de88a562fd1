// rope: GPT-NeoX rotate-half on the first rd = 2*len(invFreq) dims of every head, in place, optionally
// after a per-head RMSNorm (normWeight: Qwen3's q/k norm).
//
// The arithmetic follows the CPU kernel step for step: the angle pos * invFreq in fp32, cos and sin of
// it in double rounded to fp32, scaled in fp32, and the rotation in fp32 with explicit round-to-nearest
// products (no fused multiply-add), so both backends agree to the bit before the final rounding.
//
// Two kernels:
//   - fused (bf16, hd % 8 == 0, hd <= 256, rd/2 % 8 == 0, 16-byte aligned): a block per token. The
//     block's threads take cos and sin of the token's rd/2 angles once, into shared memory; then each
//     head is held by L lanes (L the smallest power of two >= hd/8; a lane holds 8 consecutive
//     elements, one 16-byte load), 32/L heads per warp at once. The norm is rmsnormWarpBf16Kernel's
//     arithmetic (kernels_elementwise.cu): the same per-lane sums, a butterfly over the L lanes (the
//     full warp's butterfly adds only zeros from the lanes past hd/8, so the sums are the same bits),
//     the same scaling, rounded to bf16 as that kernel stores it. Element i < rd/2 pairs with i + rd/2,
//     8 lanes * (rd/16) apart: one shuffle brings the partner's values. One read and one write of x,
//     where rmsnorm then rope made two of each: the result is the same bits. Without the norm only the rotated
//     dims are read and written (partial rotary: DeepSeek's q heads rotate 64 of 192).
//   - scalar, for every other shape and dtype: one thread per (token, frequency) rotating that pair in
//     every head, after the rmsnorm op's own kernel when normWeight is given.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cuda_check.h"
#include "dtype.cuh"
#include "ops.h"

namespace eps::cuda {
namespace {

__device__ __forceinline__ void ropeCosSin(int32_t pos, float invFreq, float scaling, float& cs, float& sn) {
  const float angle = __fmul_rn(float(pos), invFreq);
  double sd, cd;
  sincos(double(angle), &sd, &cd);
  cs = __fmul_rn(float(cd), scaling);
  sn = __fmul_rn(float(sd), scaling);
}

__global__ void ropeKernel(FloatDst x, const int32_t* __restrict__ positions, const float* __restrict__ invFreq,
                           int64_t T, int64_t nh, int64_t hd, int64_t half, float scaling) {
  const int64_t n = T * half;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / half, i = e - t * half;
    float cs, sn;
    ropeCosSin(positions[t], invFreq[i], scaling, cs, sn);
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t base = (t * nh + h) * hd;
      const float x1 = x.load(base + i), x2 = x.load(base + i + half);
      x.store(base + i, __fsub_rn(__fmul_rn(x1, cs), __fmul_rn(x2, sn)));
      x.store(base + i + half, __fadd_rn(__fmul_rn(x2, cs), __fmul_rn(x1, sn)));
    }
  }
}

constexpr int kFusedThreads = 128;

template <bool NORM>
__global__ void __launch_bounds__(kFusedThreads) ropeBf16Kernel(__nv_bfloat16* __restrict__ x,
                                                                 const int32_t* __restrict__ positions,
                                                                 const float* __restrict__ invFreq, FloatSrc w,
                                                                 int64_t nh, int hd, int half, int lanesPerHead,
                                                                 float scaling, float eps) {
  extern __shared__ float table[];  // cos[half], then sin[half]
  const int64_t t = blockIdx.x;
  const int32_t pos = positions[t];
  for (int i = threadIdx.x; i < half; i += blockDim.x) ropeCosSin(pos, invFreq[i], scaling, table[i], table[half + i]);
  __syncthreads();

  const int lane = threadIdx.x % 32, L = lanesPerHead;
  const int sub = lane % L;  // this lane's 8 elements: [8 * sub, 8 * sub + 8) of its head
  const int headsPerWarp = 32 / L;
  const int h8 = half / 8;
  const bool rotates = sub < 2 * h8, first = sub < h8;
  // Without the norm, a lane past the rotated dims would load and store its 8 elements unchanged: it skips them
  // (MLA's q rotates 64 of 192 dims a head, so a third of the traffic).
  const bool holds = NORM ? sub < hd / 8 : rotates;
  const int partner = lane - sub + (first ? sub + h8 : rotates ? sub - h8 : sub);
  float cs[8], sn[8], wv[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const int i = (first ? sub : sub - h8) * 8 + e;
    cs[e] = rotates ? table[i] : 0.0f;
    sn[e] = rotates ? table[half + i] : 0.0f;
    wv[e] = NORM && holds ? w[sub * 8 + e] : 0.0f;
  }
  // Two groups of heads per iteration: both loads are in flight before either is used.
  const int64_t step = int64_t(blockDim.x / 32) * headsPerWarp;
  for (int64_t h0 = int64_t(threadIdx.x / 32) * headsPerWarp; h0 < nh; h0 += 2 * step) {
    float v[2][8];
    bool mine[2];
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int64_t h = h0 + u * step + lane / L;
      mine[u] = holds && h < nh;
      if (mine[u]) {
        loadBf16x8(x + (t * nh + h) * hd + sub * 8, v[u]);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) v[u][e] = 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      if constexpr (NORM) {
        float ss = 0.0f;
        if (mine[u]) {
#pragma unroll
          for (int e = 0; e < 8; ++e) ss += v[u][e] * v[u][e];
        }
        for (int o = L / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        const float inv = 1.0f / sqrtf(ss / float(hd) + eps);
#pragma unroll
        for (int e = 0; e < 8; ++e) v[u][e] = __bfloat162float(__float2bfloat16_rn(v[u][e] * inv * wv[e]));
      }
      float other[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) other[e] = __shfl_sync(0xffffffffu, v[u][e], partner);
      if (rotates) {
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          v[u][e] = first ? __fsub_rn(__fmul_rn(v[u][e], cs[e]), __fmul_rn(other[e], sn[e]))
                          : __fadd_rn(__fmul_rn(v[u][e], cs[e]), __fmul_rn(other[e], sn[e]));
        }
      }
      if (mine[u]) storeBf16x8(x + (t * nh + h0 + u * step + lane / L) * hd + sub * 8, v[u]);
    }
  }
}

}  // namespace

// tensors: x[T,nh,hd] (in place), positions[T] i32, invFreq[rd/2] f32, normWeight[hd] optional;
// params: attentionScaling, normEps
void ropeOp(OpContext& c, const OpArgs& args) {
  const TensorRef& x = args.tensors[0];
  const TensorRef& norm = args.tensors[3];
  const int64_t T = x.dim(0), nh = x.dim(1), hd = x.dim(2);
  const int64_t half = args.tensors[2].numel();
  if (T == 0 || nh == 0) return;
  const float scaling = float(args.params[0]), eps = float(args.params[1]);
  const int32_t* positions = args.tensors[1].as<const int32_t>();
  const float* invFreq = args.tensors[2].as<const float>();
  // EPS_ROPE_FUSED=0 takes the two-kernel path everywhere (read at each call: before/after in one process).
  const char* env = std::getenv("EPS_ROPE_FUSED");
  const bool fused = !(env && std::strcmp(env, "0") == 0) && x.dtype == DType::BF16 && hd % 8 == 0 && hd <= 256 &&
                     half % 8 == 0 && aligned16({x.data});
  if (fused) {
    int lanes = 1;
    while (lanes < hd / 8) lanes *= 2;
    const size_t smem = 2 * size_t(half) * sizeof(float);
    auto kernel = norm.present() ? ropeBf16Kernel<true> : ropeBf16Kernel<false>;
    kernel<<<unsigned(T), kFusedThreads, smem, c.cuda>>>(x.as<__nv_bfloat16>(), positions, invFreq, floatSrc(norm), nh,
                                                          int(hd), int(half), lanes, scaling, eps);
    checkLaunch("rope");
    return;
  }
  if (norm.present()) {
    const TensorRef heads = withShape(x, {T * nh, hd});
    runCudaOp(c, "rmsnorm", {heads, heads, norm}, {args.params[1]});
  }
  if (half == 0) return;
  const int threads = 128;
  ropeKernel<<<gridFor(T * half, threads), threads, 0, c.cuda>>>(floatDst(x), positions, invFreq, T, nh, hd, half,
                                                                 scaling);
  checkLaunch("rope");
}

// The ops this file implements (contracts: native/ops.md).
EPS_CUDA_OP("rope", ropeOp);

}  // namespace eps::cuda
