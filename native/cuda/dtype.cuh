// Device-side loads and stores of float tensors of any storage dtype (f32, bf16, f16). Kernels
// load to fp32, compute in fp32 and round on store (round to nearest even, as the CPU backend's
// dtype.h does), so one kernel serves every mix of dtypes the op contracts allow. The dtype is a
// kernel argument, the same for every thread, so the switch costs a uniform branch, not divergence.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <initializer_list>

#include "../backend.h"
#include "device_error.h"

namespace eps::cuda {

struct FloatSrc {
  const void* p;
  int dtype;  // DType as int

  __device__ __forceinline__ float operator[](int64_t i) const {
    if (dtype == int(DType::BF16)) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    if (dtype == int(DType::F32)) return static_cast<const float*>(p)[i];
    return __half2float(static_cast<const __half*>(p)[i]);
  }
};

struct FloatDst {
  void* p;
  int dtype;

  __device__ __forceinline__ float load(int64_t i) const {
    return FloatSrc{p, dtype}[i];
  }
  __device__ __forceinline__ void store(int64_t i, float v) const {
    if (dtype == int(DType::BF16)) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
    else if (dtype == int(DType::F32)) static_cast<float*>(p)[i] = v;
    else static_cast<__half*>(p)[i] = __float2half_rn(v);
  }
};

inline FloatSrc floatSrc(const TensorRef& t) { return {t.data, int(t.dtype)}; }
inline FloatDst floatDst(const TensorRef& t) { return {t.data, int(t.dtype)}; }

// Records the first index error of the stream (device_error.h); later ones are dropped.
__device__ __forceinline__ void reportIndexError(DeviceErrorSlot* slot, IndexCheck check, long long index,
                                                 long long value, long long limit) {
  if (atomicCAS(&slot->check, 0, -1) == 0) {
    slot->index = index;
    slot->value = value;
    slot->limit = limit;
    __threadfence_system();
    atomicExch(&slot->check, int(check));
  }
}

// Eight bf16 values as one 16-byte access (the pointer must be 16-byte aligned), widened to fp32 or
// rounded from it (round to nearest even, as the scalar stores).
__device__ __forceinline__ void loadBf16x8(const void* p, float (&v)[8]) {
  const uint4 u = *static_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ void storeBf16x8(void* p, const float (&v)[8]) {
  uint4 u;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  *static_cast<uint4*>(p) = u;
}

// Two fp32 values rounded to bf16 (nearest even) and packed in one 32-bit register, lo in the low half:
// the A-operand fragment layout of the bf16 tensor-core MMAs (mma.sync, wgmma).
__device__ __forceinline__ uint32_t packBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// silu(g) * u for the bf16 SwiGLU paths, which must agree to the bit: the swiglu op's vector kernel
// (kernels_elementwise.cu) and grouped_sm90's SwiGLU epilogue (grouped_gemm_sm90.cu) both call this. The fast exp
// and division (about 2 ulp in fp32, far below bf16's rounding of the result) keep the epilogue short while the
// tensor cores wait on it.
__device__ __forceinline__ float swigluValue(float g, float u) { return __fdividef(g, 1.0f + __expf(-g)) * u; }

// Whether every pointer is 16-byte aligned (host side, before choosing a vector kernel).
inline bool aligned16(std::initializer_list<const void*> ps) {
  for (const void* p : ps)
    if (reinterpret_cast<uintptr_t>(p) & 15) return false;
  return true;
}

// Grid size for a grid-stride loop over n items with `threads` per block.
inline unsigned gridFor(int64_t n, int threads, int64_t maxBlocks = 65535LL * 16) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > maxBlocks) blocks = maxBlocks;
  return unsigned(blocks);
}

__device__ __forceinline__ float warpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

}  // namespace eps::cuda
