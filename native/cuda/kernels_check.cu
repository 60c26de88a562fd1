// count_nonfinite: how many values of each row are NaN or infinite (native/ops.md). One block per row
// (grid-strided past 65535*8 rows): each thread counts its strided share, a shared-memory sum makes
// the row's count. Rows are logits (vocab-wide) or hidden states, so a block's work is large enough.
#include <cstdint>

#include "cuda_check.h"
#include "dtype.cuh"
#include "ops.h"

namespace eps::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void countNonfiniteKernel(int32_t* __restrict__ counts, FloatSrc x, int64_t rows, int64_t N) {
  __shared__ int partial[kThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    int bad = 0;
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) bad += isfinite(x[r * N + i]) ? 0 : 1;
    partial[threadIdx.x] = bad;
    __syncthreads();
    for (int s = kThreads / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
      __syncthreads();
    }
    if (threadIdx.x == 0) counts[r] = partial[0];
    __syncthreads();
  }
}

// tensors: counts[R] i32, x[R,N]
void countNonfiniteOp(OpContext& c, const OpArgs& args) {
  const TensorRef& counts = args.tensors[0];
  const TensorRef& x = args.tensors[1];
  const int64_t rows = x.dim(0), N = x.dim(1);
  if (rows == 0) return;
  const unsigned blocks = unsigned(rows < 65535LL * 8 ? rows : 65535LL * 8);
  countNonfiniteKernel<<<blocks, kThreads, 0, c.cuda>>>(counts.as<int32_t>(), floatSrc(x), rows, N);
  checkLaunch("count nonfinite");
}

}  // namespace

EPS_CUDA_OP("count_nonfinite", countNonfiniteOp);

}  // namespace eps::cuda
