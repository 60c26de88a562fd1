// rope: GPT-NeoX rotate-half on the first rd = 2*len(invFreq) dims of every head, in place.
//
// One thread per (token, frequency) computes cos and sin once and rotates that pair in every head
// of the token. The arithmetic follows the CPU kernel step for step: the angle pos * invFreq in
// fp32, cos and sin of it in double rounded to fp32, scaled in fp32, and the rotation in fp32 with
// explicit round-to-nearest products (no fused multiply-add), so both backends agree to the bit
// before the final rounding to storage.
#include <cstdint>

#include "cuda_check.h"
#include "dtype.cuh"
#include "ops.h"

namespace eps::cuda {
namespace {

__global__ void ropeKernel(FloatDst x, const int32_t* __restrict__ positions, const float* __restrict__ invFreq,
                           int64_t T, int64_t nh, int64_t hd, int64_t half, float scaling) {
  const int64_t n = T * half;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / half, i = e - t * half;
    const float angle = __fmul_rn(float(positions[t]), invFreq[i]);
    double sd, cd;
    sincos(double(angle), &sd, &cd);
    const float cs = __fmul_rn(float(cd), scaling);
    const float sn = __fmul_rn(float(sd), scaling);
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t base = (t * nh + h) * hd;
      const float x1 = x.load(base + i), x2 = x.load(base + i + half);
      x.store(base + i, __fsub_rn(__fmul_rn(x1, cs), __fmul_rn(x2, sn)));
      x.store(base + i + half, __fadd_rn(__fmul_rn(x2, cs), __fmul_rn(x1, sn)));
    }
  }
}

}  // namespace

// tensors: x[T,nh,hd] (in place), positions[T] i32, invFreq[rd/2] f32; params: attentionScaling
void ropeOp(OpContext& c, const OpArgs& args) {
  const TensorRef& x = args.tensors[0];
  const int64_t T = x.dim(0), nh = x.dim(1), hd = x.dim(2);
  const int64_t half = args.tensors[2].numel();
  if (T == 0 || nh == 0 || half == 0) return;
  const int threads = 128;
  ropeKernel<<<gridFor(T * half, threads), threads, 0, c.cuda>>>(floatDst(x), args.tensors[1].as<const int32_t>(),
                                                                 args.tensors[2].as<const float>(), T, nh, hd, half,
                                                                 float(args.params[0]));
  checkLaunch("rope");
}

// The ops this file implements (contracts: native/ops.md).
EPS_CUDA_OP("rope", ropeOp);

}  // namespace eps::cuda
