// What the standalone kernel harnesses (grouped_gemm_check.cu, attention_sm90_check.cu) share: a CUDA
// call check that exits, and random and poison fills of device buffers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#define CK(x)                                                                                          \
  do {                                                                                                 \
    cudaError_t e_ = (x);                                                                              \
    if (e_ != cudaSuccess) {                                                                           \
      fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, __LINE__, #x); \
      exit(2);                                                                                         \
    }                                                                                                  \
  } while (0)

__device__ __forceinline__ uint64_t splitmix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [-scale, scale), never exactly zero (zeros hide unwritten outputs and wrong indexing).
__global__ void fillRandom(__nv_bfloat16* p, size_t n, uint64_t seed, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint64_t h = splitmix(seed * 0x100000001B3ull + i);
    float u = float(h >> 40) * (2.0f / 16777216.0f) - 1.0f;
    if (fabsf(u) < 1e-3f) u = u < 0 ? -1e-3f : 1e-3f;
    p[i] = __float2bfloat16(u * scale);
  }
}

// 0xFFFF is a bf16 NaN: an element a kernel should have written and did not stays NaN.
__global__ void fillPoison(uint16_t* p, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = 0xFFFF;
}
