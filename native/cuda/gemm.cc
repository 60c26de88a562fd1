// matmul through cuBLAS (cublasGemmEx: bf16 in, fp32 compute), plus the pieces expert_gemm.cc
// shares: the per-stream handle, the dtype plan and the row-major GEMM call.
#include <climits>
#include <memory>

#include "blas.h"

namespace eps::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // what cuBLAS recommends for Hopper

struct BlasState {
  int device;
  cublasHandle_t handle = nullptr;
  std::shared_ptr<CachingAllocator> allocator;
  void* workspace = nullptr;
  size_t workspaceBlock = 0;
};

// Runs when the stream is destroyed, after it has synchronised.
void destroyBlasState(void* p) {
  auto* s = static_cast<BlasState*>(p);
  cudaSetDevice(s->device);
  if (s->handle) cublasDestroy(s->handle);
  if (s->workspace) s->allocator->release(s->workspace, s->workspaceBlock);
  delete s;
}

int checkedInt(int64_t v, const char* what) {
  if (v > INT_MAX) throw std::invalid_argument(std::string("matmul: ") + what + " = " + std::to_string(v) + " is over cuBLAS's int range");
  return int(v);
}

}  // namespace

cublasHandle_t blasHandle(OpContext& c) {
  if (!c.stream.blas) {
    auto* state = new BlasState{c.ctx.device};
    std::shared_ptr<void> holder(state, destroyBlasState);
    state->allocator = c.ctx.allocator;
    checkCublas(cublasCreate(&state->handle), "cublasCreate");
    checkCublas(cublasSetStream(state->handle, c.cuda), "cublasSetStream");
    state->workspace = c.ctx.allocator->allocate(kWorkspaceBytes, &state->workspaceBlock);
    checkCublas(cublasSetWorkspace(state->handle, state->workspace, kWorkspaceBytes), "cublasSetWorkspace");
    c.stream.blas = std::move(holder);
  }
  return static_cast<BlasState*>(c.stream.blas.get())->handle;
}

GemmPlan planGemm(OpContext& c, const TensorRef& out, const TensorRef& a, const TensorRef& w) {
  GemmPlan plan{a.data, w.dtype, out.data, out.dtype, false};
  if (a.dtype != w.dtype) {
    void* converted = c.scratch(size_t(a.numel()) * dtypeSize(w.dtype));
    convertFloats(c.cuda, converted, w.dtype, a.data, a.dtype, a.numel());
    plan.a = converted;
  }
  const bool outOk = out.dtype == DType::F32 || out.dtype == w.dtype;
  if (!outOk) {
    plan.out = c.scratch(size_t(out.numel()) * sizeof(float));
    plan.outType = DType::F32;
    plan.outIsScratch = true;
  }
  return plan;
}

void finishGemm(OpContext& c, const GemmPlan& plan, const TensorRef& out) {
  if (plan.outIsScratch) convertFloats(c.cuda, out.data, out.dtype, plan.out, plan.outType, out.numel());
}

void gemmRowMajor(cublasHandle_t h, const void* a, const void* w, DType inType, void* out, DType outType, int64_t rows,
                  int64_t N, int64_t K, float beta) {
  const float alpha = 1.0f;
  checkCublas(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, checkedInt(N, "N"), checkedInt(rows, "M"), checkedInt(K, "K"),
                           &alpha, w, cudaTypeOf(inType), int(K), a, cudaTypeOf(inType), int(K), &beta, out,
                           cudaTypeOf(outType), int(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cublasGemmEx");
}

// tensors: out[M,N], a[M,K], w[N,K], bias[N] (optional)
void matmulOp(OpContext& c, const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& a = args.tensors[1];
  const TensorRef& w = args.tensors[2];
  const bool hasBias = args.tensors.size() > 3 && args.tensors[3].present();
  const int64_t M = a.dim(0), K = a.dim(1), N = w.dim(0);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    // An empty sum: out is the bias, or zeros.
    if (hasBias) broadcastRows(c.cuda, out.data, out.dtype, args.tensors[3].data, args.tensors[3].dtype, M, N);
    else checkCuda(cudaMemsetAsync(out.data, 0, size_t(out.numel()) * dtypeSize(out.dtype), c.cuda), "cudaMemsetAsync(matmul)");
    return;
  }
  cublasHandle_t h = blasHandle(c);
  const GemmPlan plan = planGemm(c, out, a, w);
  // The bias goes into out first and the GEMM adds to it (beta = 1): one rounding at the end, as the
  // CPU backend adds the bias in fp32 before it rounds.
  if (hasBias) broadcastRows(c.cuda, plan.out, plan.outType, args.tensors[3].data, args.tensors[3].dtype, M, N);
  gemmRowMajor(h, plan.a, w.data, plan.inType, plan.out, plan.outType, M, N, K, hasBias ? 1.0f : 0.0f);
  finishGemm(c, plan, out);
}

// The ops this file implements (contracts: native/ops.md).
EPS_CUDA_OP("matmul", matmulOp);

}  // namespace eps::cuda
