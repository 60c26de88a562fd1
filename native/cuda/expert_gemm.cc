// expert_matmul: the expert FFN GEMM over ragged per-expert row counts, in the two kernels the EPS
// scheduler chooses between.
//
//   kernel 1, dense:   one cublasGemmEx per non-empty segment (best when experts have many rows:
//                      each GEMM runs at cuBLAS's full rate).
//   kernel 0, grouped: one launch for every segment, through cublasGemmGroupedBatchedEx (best
//                      when experts have few rows: no per-expert launch gaps).
//
// Both take the counts from host memory (ints). The grouped kernel is behind groupedGemm(), the
// one function a kernel of our own (wgmma/TMA, CUTLASS-style) would replace: cuBLAS's grouped API
// stays near 330 TFLOP/s on H200 (../shared/gpu/README.md).
#include <climits>
#include <vector>

#include "blas.h"

namespace eps::cuda {

namespace {

// Rows [row0, row0 + rows) of a and out use expert `expert`'s weights.
struct Segment {
  int64_t expert;
  int64_t row0;
  int64_t rows;
};

struct ExpertProblem {
  const void* a;   // [R, K], plan.inType
  const void* w;   // [E, N, K], plan.inType
  void* out;       // [R, N], plan.outType
  DType inType, outType;
  int64_t N, K;
  std::vector<Segment> segments;  // non-empty ones only
};

void denseGemms(cublasHandle_t h, const ExpertProblem& p) {
  const size_t inSize = dtypeSize(p.inType), outSize = dtypeSize(p.outType);
  for (const Segment& s : p.segments) {
    const auto* a = static_cast<const char*>(p.a) + s.row0 * p.K * inSize;
    const auto* w = static_cast<const char*>(p.w) + s.expert * p.N * p.K * inSize;
    auto* out = static_cast<char*>(p.out) + s.row0 * p.N * outSize;
    gemmRowMajor(h, a, w, p.inType, out, p.outType, s.rows, p.N, p.K, 0.0f);
  }
}

// cuBLAS's grouped GEMM takes these type pairs only (fp32 compute).
bool groupedTakes(DType in, DType out) { return in == out; }

void groupedGemm(OpContext& c, cublasHandle_t h, const ExpertProblem& p) {
  const int G = int(p.segments.size());
  const size_t inSize = dtypeSize(p.inType), outSize = dtypeSize(p.outType);
  // One group per segment (their row counts differ); the matrices' addresses go to the device as
  // one table: A (weights), B (activations), C (outputs).
  std::vector<cublasOperation_t> transA(G, CUBLAS_OP_T), transB(G, CUBLAS_OP_N);
  std::vector<int> m(G, int(p.N)), n(G), k(G, int(p.K)), lda(G, int(p.K)), ldb(G, int(p.K)), ldc(G, int(p.N)),
      groupSize(G, 1);
  std::vector<float> alpha(G, 1.0f), beta(G, 0.0f);
  std::vector<const void*> table(size_t(3) * G);
  for (int g = 0; g < G; ++g) {
    const Segment& s = p.segments[g];
    n[g] = int(s.rows);
    table[g] = static_cast<const char*>(p.w) + s.expert * p.N * p.K * inSize;
    table[G + g] = static_cast<const char*>(p.a) + s.row0 * p.K * inSize;
    table[2 * G + g] = static_cast<char*>(p.out) + s.row0 * p.N * outSize;
  }
  auto* devTable = static_cast<void**>(c.uploadTable(table.data(), table.size() * sizeof(void*)));
  const void* const* aArray = const_cast<const void* const*>(devTable);
  const void* const* bArray = const_cast<const void* const*>(devTable + G);
  void* const* cArray = devTable + 2 * G;
  checkCublas(cublasGemmGroupedBatchedEx(h, transA.data(), transB.data(), m.data(), n.data(), k.data(), alpha.data(),
                                         aArray, cudaTypeOf(p.inType), lda.data(), bArray, cudaTypeOf(p.inType),
                                         ldb.data(), beta.data(), cArray, cudaTypeOf(p.outType), ldc.data(), G,
                                         groupSize.data(), CUBLAS_COMPUTE_32F),
              "cublasGemmGroupedBatchedEx");
}

}  // namespace

// tensors: out[R,N], a[R,K], w[E,N,K]; params: kernel (0 grouped, 1 dense); ints: counts[S], S a
// multiple of E, segment s using expert s % E.
void expertMatmulOp(OpContext& c, const OpArgs& args) {
  const TensorRef& out = args.tensors[0];
  const TensorRef& a = args.tensors[1];
  const TensorRef& w = args.tensors[2];
  const int64_t R = a.dim(0), K = a.dim(1), E = w.dim(0), N = w.dim(1);
  if (R == 0 || N == 0) return;
  if (K == 0) {
    checkCuda(cudaMemsetAsync(out.data, 0, size_t(out.numel()) * dtypeSize(out.dtype), c.cuda), "cudaMemsetAsync(expert_matmul)");
    return;
  }
  if (N > INT_MAX || K > INT_MAX || R > INT_MAX) throw std::invalid_argument("expert_matmul: a dimension is over cuBLAS's int range");

  cublasHandle_t h = blasHandle(c);
  const GemmPlan plan = planGemm(c, out, a, w);
  ExpertProblem p{plan.a, w.data, plan.out, plan.inType, plan.outType, N, K, {}};
  int64_t row = 0;
  for (size_t s = 0; s < args.ints.size(); ++s) {
    const int64_t rows = args.ints[s];
    if (rows > 0) p.segments.push_back({int64_t(s) % E, row, rows});
    row += rows;
  }
  const bool grouped = args.params[0] == 0.0 && groupedTakes(p.inType, p.outType) && p.segments.size() > 1;
  if (grouped) groupedGemm(c, h, p);
  else denseGemms(h, p);
  finishGemm(c, plan, out);
}

// The ops this file implements (contracts: native/ops.md).
EPS_CUDA_OP("expert_matmul", expertMatmulOp);

}  // namespace eps::cuda
