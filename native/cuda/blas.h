// What the GEMM ops share: the per-stream cuBLAS handle, dtype mapping, and the plan that turns
// an op's (possibly mixed) dtypes into ones cuBLAS takes.
//
// Row-major out[M,N] = a[M,K] @ w[N,K]^T is, in cuBLAS's column-major terms, out^T (N x M) =
// w^T (op T of the K x N column-major w) times a^T (K x M column-major a): one cublasGemmEx with
// transa = T, transb = N, m = N, n = M, k = K, lda = ldb = K, ldc = N. No copies, no transposes.
#pragma once

#include <cublas_v2.h>

#include <string>

#include "../backend.h"
#include "cuda_check.h"
#include "ops.h"

namespace eps::cuda {

inline void checkCublas(cublasStatus_t st, const char* call) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw CudaError(std::string(call) + ": " + cublasGetStatusName(st) + " (" + cublasGetStatusString(st) + ")");
}

// The stream's cuBLAS handle (made on first use, with its own 32 MiB workspace, so that streams
// never share one).
cublasHandle_t blasHandle(OpContext& c);

inline cudaDataType cudaTypeOf(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: throw std::invalid_argument(std::string("no cuBLAS type for ") + dtypeName(t));
  }
}

// The dtypes one GEMM runs in: inputs in w's dtype (a converted when it differs), output in out's
// dtype when cuBLAS takes that pair with fp32 compute (bf16 -> bf16/f32, f16 -> f16/f32,
// f32 -> f32), else in an f32 scratch that is converted into out afterwards.
struct GemmPlan {
  const void* a;
  DType inType;
  void* out;
  DType outType;
  bool outIsScratch;
};

GemmPlan planGemm(OpContext& c, const TensorRef& out, const TensorRef& a, const TensorRef& w);
// After the GEMMs: copies an f32 scratch output into the real one.
void finishGemm(OpContext& c, const GemmPlan& plan, const TensorRef& out);

// One row-major product on the stream: out[rows, N] (+)= a[rows, K] @ w[N, K]^T. `beta` 1 adds to
// what out holds (a bias broadcast there first).
void gemmRowMajor(cublasHandle_t h, const void* a, const void* w, DType inType, void* out, DType outType, int64_t rows,
                  int64_t N, int64_t K, float beta);

}  // namespace eps::cuda
