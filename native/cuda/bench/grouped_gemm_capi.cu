// A C entry point to grouped_sm90 for the baseline scripts (scripts/baselines/grouped_mm_interleaved.py
// loads it with ctypes), so that our kernel and torch._grouped_mm run in one process on the same tensors,
// timed in alternation under the same clocks and power state. Bench-only: the addon does not build it.
//   nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -Xcompiler -fPIC -shared -I native/cuda \
//     native/cuda/bench/grouped_gemm_capi.cu native/cuda/grouped_gemm_sm90.cu -o libgg.so
#include "grouped_gemm_sm90.h"

extern "C" {

// Returns the cudaError_t of the launch (0: launched; cudaErrorInvalidValue: a shape the kernel refuses).
int epsGroupedGemmSm90(const void* a, const void* w, void* out, const int32_t* offsets, long long R, int S, int E,
                       int N, int K, int config, int band, int swiglu, void* stream) {
  eps::cuda::GroupedGemmSm90Args p{};
  p.a = a;
  p.w = w;
  p.out = out;
  p.offsets = offsets;
  p.R = R;
  p.S = S;
  p.E = E;
  p.N = N;
  p.K = K;
  p.config = config;
  p.bandM = band;
  p.swiglu = swiglu != 0;
  return int(eps::cuda::groupedGemmSm90(p, static_cast<cudaStream_t>(stream)));
}

int epsGroupedGemmSm90Supported(int device) { return eps::cuda::groupedGemmSm90Supported(device) ? 1 : 0; }

}  // extern "C"
